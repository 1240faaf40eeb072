"""The base of the SQL stores: the dialect (the only place SQLite and PostgreSQL differ in
SQL), transactions, rows and the schema's initialisation."""

from __future__ import annotations

import abc
import functools
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from .._models import Document
from .._records import Record, load_outcome
from .._redact import redact
from . import schema
from .base import Store

__all__ = ["DOC_COLUMNS", "SQLBase", "doc_columns"]

_T = TypeVar("_T")

DOC_COLUMNS = (
    "id",
    "provider",
    "kind",
    "content_type",
    "metadata",
    "payload",
    "revision",
    "state",
    "key",
    "key_revision",
    "previous_key",
    "previous_state",
    "attempts",
    "polls",
    "failures",
    "next_attempt_at",
    "lease_owner",
    "lease_until",
    "outcome",
    "reason",
    "provider_ref",
    "provider_state",
    "created_at",
    "updated_at",
    "first_attempt_at",
)


def doc_columns(table: str = "documents", column: str = "payload") -> str:
    """The SELECT list of :data:`DOC_COLUMNS` from *table* (a qualified name where the outbox
    reads on another application's connection): the payload from the ``payloads`` table
    when it holds the document's current revision, else from the document's row, whose
    payload column is *column* (:attr:`SQLBase.payload_column`)."""
    head, sep, tail = table.rpartition("documents")
    payloads = head + "payloads" + tail if sep else "payloads"
    payload = (
        f"COALESCE((SELECT p.payload FROM {payloads} p WHERE p.id = {table}.id"
        f" AND p.revision = {table}.revision), {table}.{column})"
    )
    return ", ".join(payload if c == "payload" else c for c in DOC_COLUMNS)


class SQLBase(Store):
    """Dialect, transactions and rows; the store's jobs are mixins on top of it."""

    # -- dialect: everything SQLite and PostgreSQL spell differently ---------------------------
    #: placeholder of the DB-API driver ("?" or "%s").
    ph = "?"
    blob_type = "BLOB"
    real_type = "REAL"
    serial_pk = "INTEGER PRIMARY KEY AUTOINCREMENT"
    #: SQL of one metadata value (the key bound as the ``?``; PostgreSQL overrides it).
    metadata_value = "json_extract(metadata, '$.\"' || ? || '\"')"
    #: the scalar maximum of two values (``MAX`` in SQLite, ``GREATEST`` in PostgreSQL).
    greatest = "MAX"
    #: appended to the claim's SELECT (``FOR UPDATE SKIP LOCKED`` where rows can be locked;
    #: SQLite's ``BEGIN IMMEDIATE`` already serialises every writer).
    claim_lock = ""
    #: appended to a SELECT that locks one row for the rest of a writing transaction.
    row_lock = ""
    #: errors after which a short write is run again (the database chose it as a victim).
    retry_errors: tuple[type[Exception], ...] = ()
    #: new payloads go to the ``payloads`` table instead of the document's row, where an
    #: UPDATE rewrites the whole row (SQLite; PostgreSQL keeps an unchanged large value)
    payload_apart = False
    #: the name of the payload column of a document's row. SQLite (schema version 2) calls
    #: it ``row_payload``: a docrelay of schema version 1 still running on an upgraded file
    #: (it does not look at the version again) names ``payload`` in every statement that
    #: reads or writes a document, which then fails ("no such column") instead of reading
    #: the empty row payload of a document whose payload is kept apart and sending it.
    payload_column = "payload"

    @abc.abstractmethod
    def _tx(self, write: bool = True) -> AbstractContextManager[Any]:
        """A transaction: yields a cursor; commits on success, rolls back on error."""

    @abc.abstractmethod
    def _tables(self, cur: Any) -> set[str]:
        """Names of the tables in the database (or schema)."""

    def _sql(self, sql: str) -> str:
        return sql if self.ph == "?" else sql.replace("?", self.ph)

    def _marks(self, n: int) -> str:
        return ", ".join("?" * n)

    def _retrying(self, fn: Callable[[], _T], tries: int = 5) -> _T:
        """Run *fn* again after a deadlock or serialisation failure (the database picked it)."""
        for i in range(tries):
            try:
                return fn()
            except self.retry_errors:
                if i == tries - 1:
                    raise
                time.sleep(0.01 * (i + 1))
        raise AssertionError("unreachable")

    @property
    def url_safe(self) -> str:
        return redact(self.url)

    def _init_schema(self) -> None:
        with self._tx() as cur:
            schema.init_schema(
                cur,
                self._tables(cur),
                self.ph,
                self.url_safe,
                schema.tables(self.blob_type, self.real_type, self.serial_pk, self.payload_column),
                schema.additive_tables(self.blob_type, self.real_type),
                upgrade=self._upgrade,
            )

    def _upgrade(self, cur: Any, version: int) -> None:
        """Bring an existing store of schema *version* (this one or older) to this
        docrelay's schema, in the schema's transaction (*cur*); idempotent. Nothing to do
        where the row's payload column keeps its name (PostgreSQL)."""

    # -- rows -----------------------------------------------------------------------------------
    @functools.cached_property
    def _select(self) -> str:
        return "SELECT " + doc_columns(column=self.payload_column) + " FROM documents"

    def _row_to_record(self, row: Sequence[Any]) -> Record:
        d = dict(zip(DOC_COLUMNS, row, strict=True))
        doc = Document(
            id=d.pop("id"),
            provider=d.pop("provider"),
            kind=d.pop("kind"),
            content_type=d.pop("content_type"),
            metadata=json.loads(d.pop("metadata")),
            payload=bytes(d.pop("payload") or b""),
        )
        # The revision was computed when the document was stored: not hashed again.
        object.__setattr__(doc, "revision", d.pop("revision"))
        d["outcome"] = load_outcome(d["outcome"])
        d["provider_state"] = json.loads(d["provider_state"] or "{}")
        return Record(document=doc, **d)

    def _get(self, cur: Any, doc_id: str, lock: bool = False) -> Record | None:
        """The record of *doc_id*; *lock*: locked for the rest of a writing transaction
        (where the database locks rows), so read-then-write paths behave as under SQLite's
        ``BEGIN IMMEDIATE``."""
        sql = self._select + " WHERE id = ?" + (self.row_lock if lock else "")
        cur.execute(self._sql(sql), (doc_id,))
        row = cur.fetchone()
        return None if row is None else self._row_to_record(row)
