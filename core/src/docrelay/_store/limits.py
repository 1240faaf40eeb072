"""Shared limits in SQL: provider pauses, rate slots, tokens and token-fetch leases, shared
by every worker process of a store (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from .._redact import redact
from ..exceptions import StoreError
from .owners import owner_is_dead, process_identity
from .sql import SQLBase

__all__ = ["Limits"]


class Limits(SQLBase):
    """Pauses, rate slots and tokens."""

    # -- providers ------------------------------------------------------------------------------
    def pause_provider(self, provider: str, reason: str, until: float | None, now: float) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO provider_pauses (provider, reason, since, until)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET"
                    " reason = excluded.reason, since = excluded.since, until = excluded.until"
                ),
                (provider, redact(reason), now, until),
            )

    def resume_provider(self, provider: str) -> None:
        with self._tx() as cur:
            cur.execute(self._sql("DELETE FROM provider_pauses WHERE provider = ?"), (provider,))

    def paused(self, now: float) -> dict[str, tuple[str, float | None]]:
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT provider, reason, until FROM provider_pauses"
                    " WHERE until IS NULL OR until > ?"
                ),
                (now,),
            )
            return {p: (r, u) for p, r, u in cur.fetchall()}

    # -- shared limits --------------------------------------------------------------------------
    #: Seconds a token fetch may hold its lease; another worker takes over after that.
    token_fetch_lease: float = 120.0
    #: Seconds to wait for another worker's token fetch before giving up (StoreError).
    lock_timeout: float = 300.0

    def rate_slot(self, bucket: str, interval: float, now: float) -> float | None:
        sql = self._sql(
            "INSERT INTO rate_buckets (bucket, next_slot) VALUES (?, ?)"
            f" ON CONFLICT (bucket) DO UPDATE SET next_slot ="
            f" {self.greatest}(rate_buckets.next_slot, ?) + ? RETURNING next_slot"
        )

        def reserve() -> float:
            with self._tx() as cur:
                cur.execute(sql, (bucket, now + interval, now, interval))
                row = cur.fetchone()
            assert row is not None
            return float(row[0]) - interval

        return self._retrying(reserve)

    def shared_token(self, credential: str, now: float) -> tuple[str, float] | None:
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT value, expires_at FROM docrelay_tokens"
                    " WHERE credential = ? AND expires_at > ?"
                ),
                (credential, now),
            )
            row = cur.fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def save_token(self, credential: str, value: str, expires_at: float) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO docrelay_tokens (credential, value, expires_at, saved_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (credential) DO UPDATE SET"
                    " value = excluded.value, expires_at = excluded.expires_at,"
                    " saved_at = excluded.saved_at"
                ),
                (credential, value, expires_at, time.time()),
            )

    def drop_token(self, credential: str, value: str) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql("DELETE FROM docrelay_tokens WHERE credential = ? AND value = ?"),
                (credential, value),
            )

    def token_lock(self, credential: str) -> AbstractContextManager[None] | None:
        return self._fetch_lease(credential)

    @contextmanager
    def _fetch_lease(self, credential: str) -> Iterator[None]:
        """Single flight across processes without a transaction held open: a lease row in
        ``token_fetches`` (taken in a short write, released after the fetch). Others wait
        and look again; a lease whose owner is provably dead, or past its end, is taken
        over."""
        me = f"{process_identity()}:{uuid.uuid4().hex[:6]}:{threading.get_ident()}"
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.02
        while True:
            now = time.time()
            with self._tx() as cur:
                cur.execute(
                    self._sql("SELECT owner, until FROM token_fetches WHERE credential = ?"),
                    (credential,),
                )
                row = cur.fetchone()
                free = row is None or float(row[1]) <= now or owner_is_dead(str(row[0]))
                if free:
                    cur.execute(
                        self._sql(
                            "INSERT INTO token_fetches (credential, owner, until) VALUES (?, ?, ?)"
                            " ON CONFLICT (credential) DO UPDATE SET owner = excluded.owner,"
                            " until = excluded.until"
                        ),
                        (credential, me, now + self.token_fetch_lease),
                    )
            if free:
                break
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"store {self.url_safe}: another worker's token fetch for {credential!r} "
                    f"did not finish within {self.lock_timeout:.0f} s"
                )
            time.sleep(pause)
            pause = min(0.2, pause * 1.5)
        try:
            yield
        finally:
            with self._tx() as cur:
                cur.execute(
                    self._sql("DELETE FROM token_fetches WHERE credential = ? AND owner = ?"),
                    (credential, me),
                )
