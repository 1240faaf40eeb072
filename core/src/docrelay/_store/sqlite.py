"""The embedded SQLite store: one file, WAL, no server."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..exceptions import StoreError
from .schema import tables
from .shared import SQLStore

__all__ = ["SQLiteStore"]

log = logging.getLogger("docrelay.store")


class SQLiteStore(SQLStore):
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

    One connection per thread; writes take the database lock up front (``BEGIN IMMEDIATE``)
    so claims by several threads or processes on one file never interleave. Rate slots,
    tokens and token fetches are shared by every process on the file, as on PostgreSQL.

    :param synchronous: SQLite's ``synchronous`` pragma; ``NORMAL`` (the default) survives any
        crash of the process, ``FULL`` also a power loss.
    :param timeout: seconds one try waits in SQLite's busy handler for another process's
        write lock; after that docrelay logs one line ("waiting") and keeps trying.
    :param lock_timeout: seconds a write waits in all for the write lock (and a worker for
        another worker's token fetch) before it fails with a :class:`StoreError`.
    :param dead_owner_check: seconds between looks for leases of workers of this machine whose
        process is gone (taken over at once); ``0``: wait for their leases to run out.
    :param token_fetch_lease: seconds a token fetch may take before another worker may start
        one of its own.
    :param shared: the file is also another application's (an ERP writing documents in its
        own transactions, ``Relay.submit(doc, connection=...)``): docrelay creates its tables
        next to the other tables, and still refuses a file where a table has one of its
        names. Without it, a file with other tables is refused untouched.
    """

    #: An UPDATE rewrites the whole row in SQLite: a document's payload is kept in its own
    #: table, so the state changes of a round do not write it again (and again to the WAL).
    payload_apart = True
    #: Schema version 2: not ``payload``, so that a docrelay of schema version 1 still
    #: running on the file fails on its next statement that reads or writes a document
    #: (see :meth:`_upgrade`) instead of sending a document kept apart with an empty payload.
    payload_column = "row_payload"

    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "NORMAL",
        timeout: float = 5.0,
        lock_timeout: float = 300.0,
        dead_owner_check: float = 10.0,
        token_fetch_lease: float = 120.0,
        shared: bool = False,
    ) -> None:
        self.url = url
        self.shared = bool(shared)
        path = url.removeprefix("sqlite://")
        if path.startswith("/"):
            path = path[1:]  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
        if not path or path == ":memory:":
            raise StoreError("sqlite store needs a file path: sqlite:///docrelay.db")
        self.path = Path(path)
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise StoreError(f"invalid sqlite synchronous mode {synchronous!r}")
        for name, value in (
            ("timeout", timeout),
            ("lock_timeout", lock_timeout),
            ("dead_owner_check", dead_owner_check),
            ("token_fetch_lease", token_fetch_lease),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise StoreError(f"[store] {name} must be a number of seconds, not {value!r}")
        self._synchronous = synchronous.upper()
        self._timeout = float(timeout)
        self.lock_timeout = max(float(lock_timeout), self._timeout)
        self.dead_owner_check = float(dead_owner_check)
        self.token_fetch_lease = float(token_fetch_lease)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # One "waiting for the lock" episode at a time (logged once, not per thread or try).
        self._waiting_since: float | None = None
        if self.path.parent and not self.path.parent.exists():
            raise StoreError(f"store directory {str(self.path.parent)!r} does not exist")
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"store path {str(self.path)!r} is a directory")
        try:
            self._init_schema()
            self._conn().execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"{self.path}: not a usable docrelay store ({exc})") from None
        except StoreError:
            self.close()
            raise

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                # WAL is switched on once the file is known to be a docrelay store
                # (see __init__): a foreign file is refused untouched.
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.execute("PRAGMA foreign_keys=ON")
                # One connection per worker thread: a small page cache each (the default
                # 2 MiB times 16 workers is most of a send's memory; the OS caches the file).
                conn.execute("PRAGMA cache_size=-256")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open store {str(self.path)!r}: {exc}") from None
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        conn = self._conn()
        # Threads of this process queue for the write lock here, in order, instead of
        # polling SQLite's busy handler (which sleeps in growing steps); other processes
        # still meet at BEGIN IMMEDIATE.
        if write:
            self._take_write_lock()
        try:
            cur = conn.cursor()
            try:
                self._begin(cur, write)
            except BaseException:
                cur.close()
                raise
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
            finally:
                cur.close()
        finally:
            if write:
                self._write_lock.release()

    def _take_write_lock(self) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while not self._write_lock.acquire(timeout=min(self._timeout or 0.1, 1.0)):
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"store {str(self.path)!r}: database is locked (waited "
                    f"{self.lock_timeout:.0f} s for the write lock)"
                )

    def _begin(self, cur: sqlite3.Cursor, write: bool) -> None:
        """BEGIN; while another process holds the write lock, wait (one log line per wait)."""
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise StoreError(f"store {str(self.path)!r}: {exc}") from None
                if self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                    log.warning(
                        "store %s: another process holds the write lock; waiting (up to %.0f s)",
                        self.path,
                        self.lock_timeout,
                    )
                continue
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {str(self.path)!r}: {exc}") from None
            if write and self._waiting_since is not None:
                waited, self._waiting_since = time.monotonic() - self._waiting_since, None
                log.info("store %s: write lock free again after %.1f s", self.path, waited)
            return

    def _upgrade(self, cur: Any, version: int) -> None:
        """Version 1 to 2: the row's payload column is renamed ``row_payload``, in the
        transaction that records the new version. A docrelay of version 1 that is still
        running on the file does not read the version again; its next statement naming
        ``payload`` on documents (a claim, a read, a submission) fails with "no such column"
        and it stops with a store error, instead of reading the empty row payload of a
        document stored by version 2 (kept in ``payloads``) and sending that. Idempotent:
        a file whose column is renamed already is left as it is."""
        cur.execute("PRAGMA table_info(documents)")
        columns = {str(r[1]) for r in cur.fetchall()}
        if self.payload_column in columns:
            return
        if "payload" not in columns:
            raise StoreError(f"{self.path}: not a usable docrelay store (documents has no payload)")
        cur.execute(f"ALTER TABLE documents RENAME COLUMN payload TO {self.payload_column}")

    def _tables(self, cur: Any) -> set[str]:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        names = {r[0] for r in cur.fetchall() if not r[0].startswith("sqlite_")}
        if self.shared:  # the other application's tables are not looked at
            ours = " ".join(tables("BLOB", "REAL", "INTEGER PRIMARY KEY"))
            names &= set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ours))
        return names

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            with suppress(sqlite3.Error):
                c.close()
        self._local = threading.local()
