"""The PostgreSQL store: several workers on several machines share one queue.

PostgreSQL is the coordinator; docrelay adds nothing home-made:

- claims take due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers never claim
  the same document) and lease them (``lease_owner``, ``lease_until``); a worker that dies
  leaves documents that are due again when their lease expires;
- the engine's lease keeper (:mod:`docrelay._leases`, the same on SQLite) keeps the leases
  of this process's claimed documents alive while they are being worked on, so a long send
  never outlives its lease (leases of a dead process stop being extended and expire);
- rate limits (``rate_buckets``), tokens (``docrelay_tokens``, encrypted by the engine) and
  provider pauses (``provider_pauses``) live in the database, so the whole fleet shares them;
  one token refresh at a time across the fleet through a PostgreSQL advisory lock;
- a worker whose process is provably gone (same machine) has its leases taken over at
  once instead of when they run out;
- the schema is versioned like SQLite's (``docrelay_meta``); the first initialisation is
  serialised by an advisory lock, and a newer schema is refused.

The SQL is :class:`~docrelay._store.shared.SQLStore`'s; this module holds the connections,
the dialect and the fleet-wide token lock, and the hot path in fewer round trips and fewer
waits for the disk: the claim in one statement whose commit does not wait for the WAL flush
(see :meth:`PostgresStore.claim` for why that is safe), and a batch's changes in one message
(:meth:`PostgresStore.apply_many`).
"""

from __future__ import annotations

import logging
import re
import select
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from .._records import Record, Transition
from .._redact import redact
from ..exceptions import StoreError
from .shared import SQLStore
from .sql import DOC_COLUMNS
from .transitions import _ATTEMPT_COLUMNS

__all__ = ["PostgresStore"]

log = logging.getLogger("docrelay.store")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _strip_password(url: str) -> tuple[str, str | None]:
    """The URL without its password (userinfo or ``password=`` parameter), and the password."""
    try:
        parts = urlsplit(url)
        password = parts.password
        netloc = parts.netloc
        if password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            for k, v in pairs:
                if k == "password":
                    password = password or v
            query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs])
        safe = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        return safe, unquote(password) if password else None
    except ValueError:
        return "postgresql://(invalid URL)", None


def _one_line(exc: BaseException, secret: str | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return redact(text)[:300]


class SessionEnded(StoreError):
    """The server ended the session inside a transaction (``idle_in_transaction_session_
    timeout``: this worker was frozen too long). The transaction was rolled back, so the
    operation may be run again."""


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle pooled connection can still be used: not closed or broken, and no
    byte waiting on its socket (an idle session is sent nothing unless the server ends it:
    its last words, or the end of the stream)."""
    if conn.closed or conn.broken:
        return False
    try:
        return not select.select([conn.fileno()], [], [], 0)[0]
    except (OSError, ValueError, psycopg.Error):
        return False


_ATTEMPT_VALUES = " VALUES (" + ", ".join(["%s"] * len(_ATTEMPT_COLUMNS)) + ")"
#: The attempt's values typed for ``INSERT ... SELECT`` (a VALUES list takes the column types
#: of the target; a SELECT list does not): the attempts table's columns (schema.py).
_ATTEMPT_TYPES = {"number": "integer", "status": "integer"} | dict.fromkeys(
    ("started_at", "duration"), "double precision"
)
_ATTEMPT_SELECT = (
    " SELECT "
    + ", ".join(f"%s::{_ATTEMPT_TYPES.get(c, 'text')}" for c in _ATTEMPT_COLUMNS)
    + " FROM changed"
)


def _with_attempt(update: str, upsert: str) -> str:
    """One statement: *update* (one document's change) and, only when it changed a row,
    *upsert* (its attempt); the row count is the attempt's (0: the lease was lost)."""
    if _ATTEMPT_VALUES not in upsert:
        raise AssertionError("the attempt's upsert is not INSERT ... VALUES (...)")
    return f"WITH changed AS ({update} RETURNING id) " + upsert.replace(
        _ATTEMPT_VALUES, _ATTEMPT_SELECT, 1
    )


class PostgresStore(SQLStore):
    """``postgresql://user:password@host:5432/dbname`` (psycopg 3: ``docrelay[postgres]``).

    :param schema: keep docrelay's tables in this schema (created when missing; the
        connections' ``search_path``); default: the role's current schema (usually
        ``public``).
    :param pool_size: idle connections kept for reuse (one per busy thread is opened as
        needed).
    :param connect_timeout: seconds to wait for the server when connecting.
    :param heartbeat: seconds between the lease keeper's renewals of the leases this
        process holds (``None``, ``0`` or ``False``: a third of the lease).
    :param max_hold: the lease keeper stops extending a lease this many seconds after the
        claim (a stuck worker must not keep a document forever).
    :param lock_timeout: seconds to wait for the fleet-wide token lock.
    :param idle_transaction_timeout: seconds a connection of this store may sit inside an
        open transaction without a statement before the server ends its session
        (``idle_in_transaction_session_timeout``). docrelay's transactions never wait on
        anything outside the database, so a transaction idle this long belongs to a frozen
        worker (SIGSTOP, a paused VM, a debugger): ending it releases the row locks that
        would otherwise stall every other worker. ``0``: never.
    :param dead_owner_check: seconds between looks for leases of workers of *this* machine
        whose process is gone (taken over at once, see :func:`~docrelay._store.owner_is_dead`);
        leases of other machines always run out. ``0``: never look.
    """

    ph = "%s"
    blob_type = "BYTEA"
    real_type = "DOUBLE PRECISION"
    serial_pk = "BIGSERIAL PRIMARY KEY"
    greatest = "GREATEST"
    claim_lock = " FOR UPDATE SKIP LOCKED"
    row_lock = " FOR UPDATE"
    retry_errors = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, SessionEnded)
    metadata_value = "(metadata::jsonb ->> ?)"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        heartbeat: float | bool | None = None,
        max_hold: float = 3600.0,
        lock_timeout: float = 300.0,
        application_name: str = "docrelay",
        dead_owner_check: float = 10.0,
        idle_transaction_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._idle_tx_timeout = max(0.0, float(idle_transaction_timeout))
        self._safe_url, self._password = _strip_password(url)
        # The password is kept out of every message (url_safe, errors), but not registered
        # as a process-wide secret: a short database password would mask ordinary words.
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise StoreError(
                f"invalid PostgreSQL schema name {schema!r}: letters, digits and _ only"
            )
        self.schema = schema
        self._pool_size = max(0, int(pool_size))
        self._connect_timeout = max(1, int(connect_timeout))
        self._application_name = application_name
        self.renew_every = float(heartbeat) if heartbeat else None
        self.max_hold = float(max_hold)
        self._lock_timeout = float(lock_timeout)
        self.lock_timeout = self._lock_timeout
        self.dead_owner_check = float(dead_owner_check)
        self._idle: list[psycopg.Connection[Any]] = []
        self._busy: set[psycopg.Connection[Any]] = set()
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        try:
            self._init_schema()
        except StoreError:
            self.close()
            raise
        except psycopg.Error as exc:
            self.close()
            raise StoreError(
                f"{self._safe_url}: not a usable docrelay store ({_one_line(exc, self._password)})"
            ) from None

    # -- connections ----------------------------------------------------------------------------
    @property
    def url_safe(self) -> str:
        return self._safe_url

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection in autocommit mode (transactions are explicit), on the schema."""
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name=self._application_name,
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to {self._safe_url}: {_one_line(exc, self._password)}"
            ) from None
        except ValueError as exc:  # malformed conninfo
            raise StoreError(
                f"invalid PostgreSQL URL {self._safe_url}: {_one_line(exc, self._password)}"
            ) from None
        try:
            if self._idle_tx_timeout:
                conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                    (str(int(self._idle_tx_timeout * 1000)),),
                )
            if self.schema is not None:
                exists = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                ).fetchone()
                if exists is None:
                    with conn.transaction():
                        conn.execute(
                            "SELECT pg_advisory_xact_lock(hashtext('docrelay:init'), hashtext(%s))",
                            (self.schema,),
                        )
                        conn.execute(
                            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                                sql.Identifier(self.schema)
                            )
                        )
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"{self._safe_url}: cannot use schema {self.schema!r}: "
                f"{_one_line(exc, self._password)}"
            ) from None
        return conn

    def _acquire(self) -> psycopg.Connection[Any]:
        """A pooled connection, in autocommit mode (transactions are explicit)."""
        if self._closed:
            raise StoreError(f"store {self._safe_url} is closed")
        conn: psycopg.Connection[Any] | None = None
        while conn is None:
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
                if conn is None:
                    break
                self._busy.add(conn)
            if not _alive(conn):
                # The server ended this idle session (a restart, pg_terminate_backend, a
                # timeout, a dropped network path): a new connection instead of an error.
                with self._pool_lock:
                    self._busy.discard(conn)
                with suppress(psycopg.Error):
                    conn.close()
                conn = None
        if conn is None:
            conn = self._connect()
            with self._pool_lock:
                self._busy.add(conn)
        return conn

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        keep = False
        with self._pool_lock:
            self._busy.discard(conn)
            if (
                not self._closed
                and not conn.closed
                and not conn.broken
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                and len(self._idle) < self._pool_size
            ):
                self._idle.append(conn)
                keep = True
        if not keep:
            conn.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        # Writes run in a transaction (conn.transaction(): BEGIN ... COMMIT, ROLLBACK on
        # error). Reads run statement by statement: under READ COMMITTED a transaction would
        # not give them one snapshot anyway, and BEGIN/COMMIT cost two round trips each.
        conn = self._acquire()
        try:
            with self._errors():
                if write:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    with conn.cursor() as cur:
                        yield cur
        finally:
            self._release(conn)

    def _script(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Several statements sent as ONE message (the simple query protocol, the values
        bound by psycopg's client-side quoting): one round trip, and one implicit
        transaction, all or nothing (an error in any rolls back every one), committed
        synchronously as every write. Returns each statement's row count.

        Nothing of the transaction waits on this process: the server has the whole of it
        before it starts, so a worker frozen here never leaves a session idle inside a
        transaction with rows locked. (psycopg's pipeline mode would send the statements
        one by one as they are queued, and the server applies no idle timeout before the
        pipeline's sync.)"""
        conn = self._acquire()
        try:
            with self._errors(), psycopg.ClientCursor(conn) as cur:
                cur.execute("; ".join(cur.mogrify(q, p) for q, p in statements))
                counts = [cur.rowcount]
                while cur.nextset():
                    counts.append(cur.rowcount)
            return counts
        finally:
            self._release(conn)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The server's and the network's errors as the store's (a deadlock or a
        serialisation failure as they are: the caller runs the transaction again)."""
        try:
            yield
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            pg_errors.IdleInTransactionSessionTimeout,  # this worker was frozen too long
        ) as exc:
            if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
                raise
            if isinstance(exc, pg_errors.IdleInTransactionSessionTimeout):
                # The server rolled the transaction back and ended the session: nothing of
                # it was committed, so the store may run it again (on a new connection).
                raise SessionEnded(
                    f"store {self._safe_url}: {_one_line(exc, self._password)}"
                ) from None
            raise StoreError(f"store {self._safe_url}: {_one_line(exc, self._password)}") from None

    # -- the hot path: fewer round trips, fewer waits for the disk ---------------------------
    # A worker waits for every round trip to the server in turn (on a busy machine each one
    # is a scheduling delay of its server process) and for every synchronous commit (the
    # WAL's fsync, shared with every other writer of the disk). The shared SQL claims a
    # batch with a synchronous commit and stores a batch's intents or outcomes in two
    # statements per document plus BEGIN and COMMIT, each waited for. Here the claim's
    # commit does not wait for the disk, and a batch's changes go out in one message.

    def claim(
        self, owner: str, now: float, lease: float, limit: int, provider: str | None = None
    ) -> list[Record]:
        self.recover_dead_owners(now)
        until = now + lease
        where, params = self._due(now, provider)
        # One statement: the due rows locked (SKIP LOCKED: rows another worker is claiming
        # are passed over, never waited for) in a MATERIALIZED CTE, so the LIMIT is applied
        # once, then leased; the old due time orders the batch as the shared claim's ORDER BY.
        sql = (
            f"WITH due AS MATERIALIZED (SELECT id, next_attempt_at FROM documents{where}"
            " ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED)"
            " UPDATE documents AS d SET lease_owner = ?, lease_until = ?, next_attempt_at = ?"
            " FROM due WHERE d.id = due.id RETURNING due.next_attempt_at, "
            + ", ".join(f"d.{self.payload_column if c == 'payload' else c}" for c in DOC_COLUMNS)
        )

        def take() -> list[Record]:
            with self._tx() as cur:
                # This transaction's commit does not wait for its WAL flush: a claim only
                # leases documents (owner, lease end, and next_attempt_at = the lease end),
                # and no document is sent on the strength of a claim alone. Every send first
                # commits the document's intent synchronously under an owner check (the
                # batch's apply_many, or apply), and that commit flushes the WAL up to it,
                # the claim included. A crash of the database server that loses a claim
                # leaves its documents as they were before it, due and not leased: the
                # intent's owner check then fails (LeaseLost) and nothing is sent for them.
                # (A reconcile lookup or a status poll may go out on the claim alone: read
                # only at the provider, and its result is written under the owner check.)
                # Every other session sees the claim at its commit, as before, so two
                # workers still never hold the same document.
                cur.execute("SET LOCAL synchronous_commit = off")
                cur.execute(self._sql(sql), [*params, int(limit), owner, until, until])
                rows = cur.fetchall()
            rows.sort(key=lambda r: r[0])
            return [self._row_to_record(r[1:]) for r in rows]

        return self._retrying(take)

    def apply_many(
        self, changes: Sequence[tuple[str, str | None, Transition]], now: float
    ) -> list[str]:
        if not changes:
            return []
        statements: list[tuple[str, Sequence[Any]]] = []
        for doc_id, owner, t in changes:
            (update, values), attempt = self._apply_statements(doc_id, owner, t, now)
            if attempt is None:
                statements.append((update, values))
            else:
                # The change and its attempt in one statement: the attempt is written only
                # when the UPDATE found the row (the lease still held), as the shared
                # apply_many does in two; its row count says which.
                upsert, attempt_values = attempt
                statements.append((_with_attempt(update, upsert), [*values, *attempt_values]))

        def write() -> list[str]:
            # All of it again on a deadlock or an ended session (the server rolled it back).
            counts = self._script(statements)
            return [c[0] for c, n in zip(changes, counts, strict=True) if n == 0]

        return self._retrying(write)

    # -- schema ---------------------------------------------------------------------------------
    def _tables(self, cur: Any) -> set[str]:
        # Called first in _init_schema's transaction: the advisory lock serialises the first
        # initialisation by several workers starting at once (held until that commit).
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext('docrelay:init'), hashtext(%s))",
            (self.schema or "",),
        )
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {r[0] for r in cur.fetchall()}

    def token_lock(self, credential: str) -> AbstractContextManager[None]:
        return self._advisory_lock("docrelay:token", credential)

    @contextmanager
    def _advisory_lock(self, space: str, name: str) -> Iterator[None]:
        """A session advisory lock on a dedicated connection (released when it closes, also
        when this process dies)."""
        conn = self._connect()
        try:
            try:
                conn.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")
                conn.execute(
                    "SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))",
                    (space, f"{self.schema or ''}/{name}"),
                )
            except psycopg.Error as exc:
                raise StoreError(
                    f"store {self._safe_url}: could not take the {space} lock: "
                    f"{_one_line(exc, self._password)}"
                ) from None
            yield
        finally:
            conn.close()

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            conns = self._idle + list(self._busy)
            self._idle, self._busy = [], set()
        for c in conns:
            with suppress(psycopg.Error):
                c.close()
