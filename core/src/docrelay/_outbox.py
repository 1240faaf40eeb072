"""The transactional outbox: documents written into docrelay's tables on the caller's own
connection, inside the caller's open transaction (``Relay.submit(doc, connection=conn)``).

docrelay never commits, rolls back, or changes the connection's settings (``search_path``,
autocommit, isolation level): the caller's commit makes the document visible to the workers,
as an ordinary ``queued`` row; its rollback leaves no trace. Its statements run inside a
savepoint, so a refusal (a known id with another revision, a missing privilege) leaves the
caller's transaction usable and nothing of docrelay's written.

Two dialects:

- PostgreSQL (psycopg 3): docrelay's tables are in a schema of the caller's database (the
  store's ``schema`` option, or the store's current schema); every name is schema-qualified.
- SQLite (``sqlite3``): the caller's connection is to the store's own file.

A connection of another type, to another database or file, or to one without docrelay's
tables raises :class:`~docrelay.ConfigError`; a connection that cannot carry a transaction
(autocommit outside a transaction, a failed transaction) raises
:class:`~docrelay.DocumentError`. Nothing is written then.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from . import _lifecycle
from ._models import Document
from ._redact import redact
from ._store import Record, SQLStore, Store
from ._store.documents import insert_sql, insert_values, revise_sql, revise_values
from ._store.sql import doc_columns
from .exceptions import ConfigError, DocumentError, StoreError

__all__ = ["submit", "submit_many"]

_SAVEPOINT = "docrelay_outbox"


@attrs.frozen
class _Target:
    """Where and how to write on the caller's connection."""

    cursor: Any
    ph: str
    documents: str  # the (qualified) name of docrelay's documents table
    for_update: str  # row lock of a read in the write path ("" on SQLite: the file is locked)
    payload: str  # the row's payload column (the store's payload_column)
    notify: tuple[str, str] | None = None  # (SQL, channel) of a wake-up sent with the commit

    def sql(self, text: str) -> str:
        return text if self.ph == "?" else text.replace("?", self.ph)


def submit(store: Store, connection: Any, document: Document, now: float) -> Record:
    """Write *document* (new, or a new revision of a known one) on *connection*, in its open
    transaction; returns the record as that transaction sees it. The lifecycle decides (as
    for :meth:`Store.submit`); the store's own statements write, on the caller's cursor."""
    with _target(store, connection) as t:
        for _ in range(2):
            # A plain read first: a submission that changes nothing (the ERP submitting a
            # stored document again) takes no row lock, which the ERP's transaction would hold
            # until its commit, stalling the worker that is delivering the document (its
            # outcome write and its lease keeper wait on that lock).
            rec, how = _lifecycle.admit(_get(store, t, document.id, lock=False), document, now)
            if how is _lifecycle.Admission.REVISION and t.for_update:
                rec, how = _lifecycle.admit(_get(store, t, document.id, lock=True), document, now)
            if how is _lifecycle.Admission.UNCHANGED:
                return rec
            if how is _lifecycle.Admission.NEW:
                # RETURNING, not rowcount: psycopg's pipeline mode has no rowcount yet.
                t.cursor.execute(
                    t.sql(
                        insert_sql(t.documents, t.payload)
                        + " ON CONFLICT (id) DO NOTHING RETURNING id"
                    ),
                    insert_values(rec),
                )
                if t.cursor.fetchone() is None:
                    continue  # another transaction stored the id meanwhile (now committed)
            else:
                t.cursor.execute(t.sql(revise_sql(t.documents, t.payload)), revise_values(rec))
            _wake(t, document.provider)
            break
        else:
            raise DocumentError(
                f"document {document.id!r} was stored by a concurrent transaction that this "
                "transaction's snapshot does not see; retry the transaction"
            )
        stored = _get(store, t, document.id, lock=False)
    assert stored is not None
    return stored


def submit_many(store: Store, connection: Any, documents: Sequence[Document], now: float) -> int:
    """Write many new documents on *connection*, in its open transaction: all or nothing (an
    id given twice or already stored raises :class:`DocumentError`, nothing is written)."""
    seen: set[str] = set()
    for d in documents:
        if d.id in seen:
            raise DocumentError(f"document id {d.id!r} is given twice")
        seen.add(d.id)
    with _target(store, connection) as t:
        ids = [d.id for d in documents]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            t.cursor.execute(
                t.sql(f"SELECT id FROM {t.documents} WHERE id IN ({', '.join('?' * len(chunk))})"),
                chunk,
            )
            row = t.cursor.fetchone()
            if row is not None:
                raise DocumentError(
                    f"document {row[0]!r} is already stored; submit_many stores new documents "
                    "only (submit a corrected revision with submit)"
                )
        if documents:
            t.cursor.executemany(
                t.sql(insert_sql(t.documents, t.payload)),
                [insert_values(_lifecycle.admit(None, d, now)[0]) for d in documents],
            )
            for provider in sorted({d.provider for d in documents}):
                _wake(t, provider)
    return len(documents)


# -- rows --------------------------------------------------------------------------------------


def _get(store: Store, t: _Target, doc_id: str, *, lock: bool) -> Record | None:
    assert isinstance(store, SQLStore)
    t.cursor.execute(
        t.sql(
            f"SELECT {doc_columns(t.documents, t.payload)} FROM {t.documents} WHERE id = ?"
            + (t.for_update if lock else "")
        ),
        (doc_id,),
    )
    row = t.cursor.fetchone()
    return None if row is None else store._row_to_record(tuple(row))


def _wake(t: _Target, provider: str) -> None:
    """Wake the workers with the caller's commit (``pg_notify`` is transactional: a rollback
    sends nothing), where the store has a wake-up channel."""
    if t.notify is not None:
        sql, channel = t.notify
        t.cursor.execute(sql, (channel, provider))


# -- targets -----------------------------------------------------------------------------------


def _unwrap(connection: Any) -> Any:
    """The DB-API connection behind a SQLAlchemy pool proxy (``engine.raw_connection()``,
    ``Connection.connection``): its ``driver_connection`` (SQLAlchemy 2) or
    ``dbapi_connection``."""
    if isinstance(connection, sqlite3.Connection):
        return connection
    for attr in ("driver_connection", "dbapi_connection"):
        inner = getattr(connection, attr, None)
        if inner is not None and inner is not connection:
            return _unwrap(inner)
    return connection


def _kind(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


@contextmanager
def _target(store: Store, connection: Any) -> Iterator[_Target]:
    conn = _unwrap(connection)
    store_kind = type(store).__name__
    if store_kind == "SQLiteStore":
        with _sqlite_target(store, conn) as t:
            yield t
        return
    if store_kind == "PostgresStore":
        with _postgres_target(store, conn) as t:
            yield t
        return
    raise ConfigError(
        f"submit(connection=...) needs a SQLite or PostgreSQL store, not {store_kind}"
    )


# SQLite ---------------------------------------------------------------------------------------


@contextmanager
def _sqlite_target(store: Any, conn: Any) -> Iterator[_Target]:
    if not isinstance(conn, sqlite3.Connection):
        raise ConfigError(
            f"docrelay's store is the SQLite file {str(store.path)!r}: submit(connection=...) "
            f"takes a sqlite3.Connection to that file, not a {_kind(conn)}"
        )
    try:
        saved_text_factory = conn.text_factory
        cur = conn.cursor()
    except sqlite3.ProgrammingError as exc:  # closed
        raise ConfigError(f"submit(connection=...): the connection is not usable ({exc})") from None
    # docrelay reads through its own cursor, whatever the ERP's row_factory (a dict, a
    # class) and text_factory (bytes, a decoder of its own) are; the latter is a setting of
    # the connection, so it is set aside for the call and given back.
    cur.row_factory = None
    conn.text_factory = str
    try:
        with _sqlite_savepoint(store, conn, cur) as t:
            yield t
    finally:
        conn.text_factory = saved_text_factory
        cur.close()


@contextmanager
def _sqlite_savepoint(store: Any, conn: sqlite3.Connection, cur: Any) -> Iterator[_Target]:
    rows = cur.execute("PRAGMA database_list").fetchall()
    main = next((str(r[2]) for r in rows if r[1] == "main"), "")
    if not main or not os.path.exists(main) or not os.path.samefile(main, store.path):
        raise ConfigError(
            f"the connection is to {main or 'an in-memory database'!r}, not to docrelay's "
            f"store {str(store.path)!r}: the ERP's tables and docrelay's must be in one "
            "SQLite file for submit(connection=...)"
        )
    tables = {
        r[0]
        for r in cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('docrelay_meta', 'documents')"
        ).fetchall()
    }
    app = None
    if "docrelay_meta" in tables:
        row = cur.execute("SELECT value FROM docrelay_meta WHERE key = 'app'").fetchone()
        app = row[0] if row else None
    if app != "docrelay" or "documents" not in tables:
        raise ConfigError(f"{str(store.path)!r} has no docrelay tables")
    if not conn.in_transaction:
        level = conn.isolation_level
        if level is None or getattr(conn, "autocommit", None) is True:
            raise DocumentError(
                "submit(connection=...) writes inside the caller's transaction, and this "
                "sqlite3 connection is in autocommit mode with none open: BEGIN first"
            )
        # What the sqlite3 module would issue before the first INSERT (its legacy mode).
        cur.execute(f"BEGIN {level}")
    cur.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        yield _Target(cur, "?", "documents", "", store.payload_column)
    except BaseException as exc:
        cur.execute(f"ROLLBACK TO {_SAVEPOINT}")
        cur.execute(f"RELEASE {_SAVEPOINT}")
        if isinstance(exc, sqlite3.IntegrityError):
            raise DocumentError(f"submit(connection=...): {exc}") from None
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"store {str(store.path)!r}: {redact(str(exc))}") from None
        raise
    cur.execute(f"RELEASE {_SAVEPOINT}")


# PostgreSQL -----------------------------------------------------------------------------------

#: Per store: (schema, database, database oid, postmaster start) of its tables.
_PG_HOMES: weakref.WeakKeyDictionary[Any, tuple[str, str, int, str]] = weakref.WeakKeyDictionary()
_PG_IDENTITY = (
    "SELECT current_schema(), current_database(),"
    " (SELECT oid FROM pg_database WHERE datname = current_database()),"
    " CAST(pg_postmaster_start_time() AS TEXT)"
)


def _pg_home(store: Any) -> tuple[str, str, int, str]:
    home = _PG_HOMES.get(store)
    if home is None:
        with store._tx(write=False) as cur:
            cur.execute(_PG_IDENTITY)
            schema, database, oid, started = cur.fetchone()
        home = (store.schema or str(schema), str(database), int(oid), str(started))
        _PG_HOMES[store] = home
    return home


@contextmanager
def _postgres_target(store: Any, conn: Any) -> Iterator[_Target]:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import pq, sql
    from psycopg.pq import TransactionStatus
    from psycopg.rows import tuple_row

    if not isinstance(conn, psycopg.Connection):
        raise ConfigError(
            f"docrelay's store is on PostgreSQL ({store.url_safe}): submit(connection=...) takes "
            f"a psycopg 3 connection (psycopg.Connection) to that database, not a {_kind(conn)}"
        )
    if conn.closed:
        raise ConfigError("submit(connection=...): the connection is closed")
    if conn.info.pipeline_status != pq.PipelineStatus.OFF:
        # In pipeline mode the ERP's statements may still be on their way: wait for their
        # results (an error of theirs surfaces here, as the transaction's failure), so that
        # the transaction status is known and docrelay's own results are its own.
        _pipeline_sync(conn)
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise DocumentError(
            "submit(connection=...): the caller's transaction has failed; roll it back first"
        )
    if status == TransactionStatus.IDLE and conn.autocommit:
        raise DocumentError(
            "submit(connection=...) writes inside the caller's transaction, and this psycopg "
            "connection is in autocommit mode with none open: use `with conn.transaction():`"
        )
    if status not in (TransactionStatus.IDLE, TransactionStatus.INTRANS):
        raise DocumentError(f"submit(connection=...): the connection is busy ({status.name})")
    schema, database, oid, started = _pg_home(store)
    # A cursor of psycopg's own class, whatever the connection's cursor_factory (a
    # RawCursor takes $1, not %s), with psycopg's default adapters for the values docrelay
    # reads and writes, whatever loaders or dumpers the ERP registered on its connection.
    cur = psycopg.Cursor(conn, row_factory=tuple_row)
    _default_adapters(cur)
    try:
        # Read only, and never an error: the caller's transaction stays as it was.
        qualified = sql.Identifier(schema, "documents").as_string(conn)
        meta = sql.Identifier(schema, "docrelay_meta").as_string(conn)
        cur.execute(
            _PG_IDENTITY + ", to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (qualified, meta),
        )
        row = cur.fetchone()
        assert row is not None
        _, their_db, their_oid, their_start, has_docs, has_meta = row
        theirs = (str(their_db), int(their_oid), str(their_start))
        if theirs != (database, oid, started):
            # The identity is cached per store: after a restart or a failover of the server
            # the start time differs for every connection. Look again before refusing.
            _PG_HOMES.pop(store, None)
            schema, database, oid, started = _pg_home(store)
        if theirs != (database, oid, started):
            raise ConfigError(
                f"the connection is to database {their_db!r} of another server or another "
                f"database than docrelay's store ({store.url_safe}, database {database!r}): "
                "submit(connection=...) needs a connection to the store's database"
            )
        if not (has_docs and has_meta):
            raise ConfigError(
                f"database {database!r} has no docrelay tables in schema {schema!r}: open the "
                "Relay on it once (it creates them), or set [store] schema to where they are"
            )
        notify = None
        channel = getattr(store, "wake_channel", None)
        if isinstance(channel, str) and channel:
            notify = ("SELECT pg_notify(%s, %s)", channel)
        cur.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield _Target(cur, "%s", qualified, " FOR UPDATE", store.payload_column, notify)
        except BaseException as exc:
            if not conn.closed and not conn.broken:
                cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            if isinstance(
                exc,
                pg_errors.TransactionRollback
                | pg_errors.SerializationFailure
                | pg_errors.DeadlockDetected,
            ):
                raise  # serialisation failure, deadlock: the caller retries its transaction
            if isinstance(exc, pg_errors.UniqueViolation):
                raise DocumentError(
                    f"submit(connection=...): a document of this batch was stored by a "
                    f"concurrent transaction ({_one_line(exc)})"
                ) from None
            if isinstance(exc, pg_errors.InsufficientPrivilege):
                raise ConfigError(
                    f"the connection's role may not write docrelay's tables in schema "
                    f"{schema!r}: {_one_line(exc)}"
                ) from None
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"store {store.url_safe}: {_one_line(exc)}") from None
            raise
        cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        if conn.info.pipeline_status != pq.PipelineStatus.OFF:
            _pipeline_sync(conn)
    finally:
        cur.close()


def _pipeline_sync(conn: Any) -> None:
    import psycopg

    try:
        with conn.pipeline() as pipeline:  # the ERP's pipeline (nested: the same one)
            pipeline.sync()
    except psycopg.Error as exc:
        raise DocumentError(
            f"submit(connection=...): the caller's transaction has failed ({_one_line(exc)}); "
            "roll it back first"
        ) from None


def _default_adapters(cur: Any) -> None:
    """psycopg's default loaders and dumpers on *cur* for the types of docrelay's columns."""
    import psycopg
    from psycopg.adapt import PyFormat
    from psycopg.pq import Format

    defaults = psycopg.adapters
    for name in ("text", "name", "varchar", "bytea", "float8", "int2", "int4", "int8", "oid",
                 "bool", "numeric"):  # fmt: skip
        info = defaults.types.get(name)
        if info is None:
            continue
        loader = defaults.get_loader(info.oid, Format.TEXT)
        if loader is not None:
            cur.adapters.register_loader(info.oid, loader)
    for cls in (str, bytes, float, int, bool, type(None)):
        for fmt in (PyFormat.AUTO, PyFormat.TEXT, PyFormat.BINARY):
            try:
                cur.adapters.register_dumper(cls, defaults.get_dumper(cls, fmt))
            except psycopg.ProgrammingError:
                continue


def _one_line(exc: BaseException) -> str:
    return redact(" ".join(str(exc).split()) or type(exc).__name__)[:300]
