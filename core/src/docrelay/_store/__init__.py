"""The state store: a typed interface (:class:`Store`, :class:`Record`, :class:`Transition`)
and one SQL implementation shared by the SQLite and PostgreSQL backends.

The typed values live in :mod:`docrelay._records` (shared with the lifecycle rules).
Modules, one job each: ``base`` (the interface), ``schema``,
``sql`` (dialect, transactions, rows), ``documents``, ``claims`` (claims and leases),
``transitions``, ``notes`` (notifications), ``limits`` (pauses, rate slots, tokens),
``owners`` (lease owners), ``shared`` (the SQL store), ``sqlite``, ``postgres``. The
lifecycle rules the store applies live in :mod:`docrelay._lifecycle`."""

from __future__ import annotations

from typing import Any

from .._records import KEEP, LeaseLost, Record, Transition
from .._redact import redact
from ..exceptions import StoreError
from .base import Store
from .documents import iter_chunks
from .owners import owner_is_dead, process_identity
from .schema import APP_ID, SCHEMA_VERSION
from .shared import SQLStore

__all__ = [
    "APP_ID",
    "KEEP",
    "SCHEMA_VERSION",
    "LeaseLost",
    "Record",
    "SQLStore",
    "Store",
    "Transition",
    "iter_chunks",
    "open_store",
    "owner_is_dead",
    "process_identity",
]


def open_store(url: str, **options: Any) -> Store:
    """Open the store named by *url*: ``sqlite:///path``, ``sqlite://:memory:`` is refused
    (it cannot survive a crash), ``postgresql://...`` needs the ``postgres`` extra."""
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url, **options)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                "the PostgreSQL store needs the postgres extra: pip install 'docrelay[postgres]'"
                f" ({exc})"
            ) from None
        return PostgresStore(url, **options)
    raise StoreError(
        f"unsupported store URL {redact(url)!r}: use sqlite:///PATH or postgresql://..."
    )
