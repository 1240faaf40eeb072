"""The PostgreSQL store: several workers on several machines share one queue.

PostgreSQL is the coordinator; docrelay adds nothing home-made:

- claims take due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers never claim
  the same document) and lease them (``lease_owner``, ``lease_until``); a worker that dies
  leaves documents that are due again when their lease expires;
- a heartbeat thread keeps the leases of this process's claimed documents alive while they
  are being worked on, so a long send never outlives its lease (leases of a dead process
  stop being extended and expire);
- rate limits (``rate_buckets``), tokens (``docrelay_tokens``, encrypted by the engine) and
  provider pauses (``provider_pauses``) live in the database, so the whole fleet shares them;
  one token refresh at a time across the fleet through a PostgreSQL advisory lock;
- a worker whose process is provably gone (same machine) has its leases taken over at
  once instead of when they run out;
- the schema is versioned like SQLite's (``docrelay_meta``); the first initialisation is
  serialised by an advisory lock, and a newer schema is refused.

All the document SQL is :class:`~docrelay._store.SQLStore`'s; this module holds the
connections, the dialect and the shared limits.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from ._models import Document
from ._redact import redact
from ._store import LeaseLost, Record, SQLStore
from .exceptions import StoreError

__all__ = ["PostgresStore"]

log = logging.getLogger("docrelay.store")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_T = TypeVar("_T")


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


class PostgresStore(SQLStore):
    """``postgresql://user:password@host:5432/dbname`` (psycopg 3: ``docrelay[postgres]``).

    :param schema: keep docrelay's tables in this schema (created when missing; the
        connections' ``search_path``); default: the role's current schema (usually
        ``public``).
    :param pool_size: idle connections kept for reuse (one per busy thread is opened as
        needed).
    :param connect_timeout: seconds to wait for the server when connecting.
    :param heartbeat: extend the leases this process holds every *heartbeat* seconds
        (``None``: a third of the lease; ``0`` or ``False``: no heartbeat thread).
    :param max_hold: the heartbeat stops extending a lease this many seconds after the
        claim (a stuck worker must not keep a document forever).
    :param lock_timeout: seconds to wait for the fleet-wide token lock.
    :param dead_owner_check: seconds between looks for leases of workers of *this* machine
        whose process is gone (taken over at once, see :func:`~docrelay._store.owner_is_dead`);
        leases of other machines always run out. ``0``: never look.
    """

    ph = "%s"
    blob_type = "BYTEA"
    real_type = "DOUBLE PRECISION"
    serial_pk = "BIGSERIAL PRIMARY KEY"
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
    ) -> None:
        self.url = url
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
        self._heartbeat_every = None if heartbeat is None else float(heartbeat or 0.0)
        self._max_hold = float(max_hold)
        self._lock_timeout = float(lock_timeout)
        self.lock_timeout = self._lock_timeout
        self.dead_owner_check = float(dead_owner_check)
        self._idle: list[psycopg.Connection[Any]] = []
        self._busy: set[psycopg.Connection[Any]] = set()
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        # Heartbeat: documents this process claimed: id -> (owner, lease, claimed at).
        self._held: dict[str, tuple[str, float, float]] = {}
        self._held_lock = threading.Lock()
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
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
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
            if conn is not None:
                self._busy.add(conn)
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
            if write:
                with conn.transaction(), conn.cursor() as cur:
                    self._local.write_cursor = cur
                    yield cur
            else:
                with conn.cursor() as cur:
                    yield cur
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
                raise
            raise StoreError(f"store {self._safe_url}: {_one_line(exc, self._password)}") from None
        finally:
            self._local.write_cursor = None
            self._release(conn)

    def _get(self, cur: Any, doc_id: str) -> Record | None:
        # In a writing transaction the row is locked: the read-then-write paths (submit,
        # requeue) then behave as they do under SQLite's BEGIN IMMEDIATE.
        write_cur = getattr(self._local, "write_cursor", None)
        if write_cur is not None and cur is write_cur:
            cur.execute(self._select + " WHERE id = %s FOR UPDATE", (doc_id,))
            row = cur.fetchone()
            return None if row is None else self._row_to_record(row)
        return super()._get(cur, doc_id)

    def _retrying(self, fn: Callable[[], _T], tries: int = 5) -> _T:
        """Run *fn* again after a deadlock or serialisation failure (PostgreSQL picked it)."""
        for i in range(tries):
            try:
                return fn()
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if i == tries - 1:
                    raise
                time.sleep(0.01 * (i + 1))
        raise AssertionError("unreachable")

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

    # -- claiming -------------------------------------------------------------------------------
    def _claim_ids(
        self, cur: Any, now: float, limit: int, provider: str | None, paused: Sequence[str]
    ) -> list[str]:
        query = "SELECT id FROM documents WHERE next_attempt_at <= %s"
        params: list[Any] = [now]
        if provider:
            query += " AND provider = %s"
            params.append(provider)
        if paused:
            query += " AND provider <> ALL(%s)"
            params.append(list(paused))
        query += " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED"
        params.append(int(limit))
        cur.execute(query, params)
        return [r[0] for r in cur.fetchall()]

    def claim(
        self, owner: str, now: float, lease: float, limit: int, provider: str | None = None
    ) -> list[Record]:
        records = super().claim(owner, now, lease, limit, provider)
        if records and self._heartbeat_interval(lease) > 0:
            started = time.monotonic()
            with self._held_lock:
                for r in records:
                    self._held[r.id] = (owner, lease, started)
            self._start_heartbeat()
        return records

    # -- concurrency-safe variants of read-then-write paths ----------------------------------
    def submit(self, document: Document, now: float) -> tuple[Record, str]:
        try:
            return super().submit(document, now)
        except pg_errors.UniqueViolation:
            # Another worker inserted the same id between our read and our insert.
            return super().submit(document, now)

    def record_notification(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return super().record_notification(*args, **kwargs)
        except pg_errors.UniqueViolation:
            return False  # the same notification, recorded by another worker just now

    def pause_provider(self, provider: str, reason: str, until: float | None, now: float) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO provider_pauses (provider, reason, since, until)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (provider) DO UPDATE SET"
                " reason = EXCLUDED.reason, since = EXCLUDED.since, until = EXCLUDED.until",
                (provider, redact(reason), now, until),
            )

    def wake_held(self, provider: str, now: float) -> int:
        return self._retrying(lambda: SQLStore.wake_held(self, provider, now))

    # -- heartbeat ------------------------------------------------------------------------------
    def _heartbeat_interval(self, lease: float) -> float:
        if self._heartbeat_every is None:
            return max(0.05, lease / 3.0)
        return self._heartbeat_every

    def _start_heartbeat(self) -> None:
        with self._held_lock:
            if self._hb_thread is not None and self._hb_thread.is_alive():
                return
            self._hb_stop.clear()
            self._hb_thread = threading.Thread(
                target=self._heartbeat_loop, name="docrelay-lease-heartbeat", daemon=True
            )
            self._hb_thread.start()

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.is_set():
            with self._held_lock:
                held = dict(self._held)
            if not held:
                wait = 1.0
            else:
                wait = min(self._heartbeat_interval(lease) for _, lease, _ in held.values())
            if self._hb_stop.wait(wait):
                return
            try:
                self.beat()
            except Exception:  # the next beat tries again; else the leases expire
                log.warning("lease heartbeat failed", exc_info=True)

    def beat(self) -> int:
        """Extend the leases this process still holds; returns how many were extended.

        A lease is extended only while its owner still has it (a finished document has no
        owner, a recovered one another owner) and for at most ``max_hold`` seconds."""
        now_mono, now = time.monotonic(), time.time()
        with self._held_lock:
            held = dict(self._held)
        if not held:
            return 0
        groups: dict[tuple[str, float], list[str]] = {}
        for doc_id, (owner, lease, started) in held.items():
            if now_mono - started > self._max_hold:
                log.warning(
                    "lease on %s held for over %.0f s: no longer extended", doc_id, self._max_hold
                )
                continue
            groups.setdefault((owner, lease), []).append(doc_id)
        alive: set[str] = set()
        for (owner, lease), ids in groups.items():
            until = now + lease
            with self._tx() as cur:
                # Only live leases: never revive one that already expired (it may be on its
                # way to another worker) nor move one a test clock set in the future.
                cur.execute(
                    "UPDATE documents SET lease_until = %s, next_attempt_at = %s"
                    " WHERE id = ANY(%s) AND lease_owner = %s AND lease_until >= %s"
                    " AND lease_until < %s RETURNING id",
                    (until, until, ids, owner, now, until),
                )
                alive.update(r[0] for r in cur.fetchall())
                cur.execute(
                    "SELECT id FROM documents WHERE id = ANY(%s) AND lease_owner = %s",
                    (ids, owner),
                )
                still = {r[0] for r in cur.fetchall()}
            alive |= still
        with self._held_lock:
            for doc_id, entry in held.items():
                if doc_id not in alive and self._held.get(doc_id) == entry:
                    del self._held[doc_id]
        return len(alive)

    def extend_lease(self, doc_id: str, owner: str, until: float) -> None:
        try:
            super().extend_lease(doc_id, owner, until)
        except LeaseLost:
            with self._held_lock:
                self._held.pop(doc_id, None)
            raise

    # -- shared limits --------------------------------------------------------------------------
    def rate_slot(self, bucket: str, interval: float, now: float) -> float | None:
        def reserve() -> float:
            with self._tx() as cur:
                cur.execute(
                    "INSERT INTO rate_buckets (bucket, next_slot) VALUES (%s, %s)"
                    " ON CONFLICT (bucket) DO UPDATE SET next_slot ="
                    " GREATEST(rate_buckets.next_slot, %s) + %s RETURNING next_slot",
                    (bucket, now + interval, now, interval),
                )
                row = cur.fetchone()
            assert row is not None
            return float(row[0]) - interval

        return self._retrying(reserve)

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
        self._hb_stop.set()
        thread = self._hb_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._pool_lock:
            self._closed = True
            conns = self._idle + list(self._busy)
            self._idle, self._busy = [], set()
        for c in conns:
            with suppress(psycopg.Error):
                c.close()
