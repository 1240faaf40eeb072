"""Claims and leases in SQL: the one claim query of both backends, lease renewal, leases of
dead owners, and what is due when."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from .._models import DocState
from .._records import Record
from .owners import owner_is_dead
from .sql import SQLBase

__all__ = ["Claims"]

log = logging.getLogger("docrelay.store")

#: Documents of paused providers are not due (a pause without an end, or not ended yet).
_NOT_PAUSED = (
    " AND provider NOT IN (SELECT provider FROM provider_pauses WHERE until IS NULL OR until > ?)"
)


class Claims(SQLBase):
    """Claiming due documents and keeping their leases."""

    #: Seconds between looks for leases of dead owners on this machine (0: never look).
    dead_owner_check: float = 10.0
    _dead_checked: float | None = None

    def _due(self, now: float | None, provider: str | None) -> tuple[str, list[Any]]:
        """The WHERE clause (and parameters) of the documents due at *now* (``None``: due at
        any time), paused providers left out."""
        sql = " WHERE next_attempt_at IS NOT NULL"
        params: list[Any] = []
        if now is not None:
            sql += " AND next_attempt_at <= ?"
            params.append(now)
        sql += _NOT_PAUSED
        params.append(time.time() if now is None else now)
        if provider:
            sql += " AND provider = ?"
            params.append(provider)
        return sql, params

    def claim(
        self, owner: str, now: float, lease: float, limit: int, provider: str | None = None
    ) -> list[Record]:
        self.recover_dead_owners(now)
        until = now + lease
        where, params = self._due(now, provider)
        select = f"SELECT id FROM documents{where} ORDER BY next_attempt_at LIMIT ?"

        def take() -> list[Record]:
            with self._tx() as cur:
                cur.execute(self._sql(select + self.claim_lock), [*params, int(limit)])
                ids = [r[0] for r in cur.fetchall()]
                if not ids:
                    return []
                cur.execute(
                    self._sql(
                        "UPDATE documents SET lease_owner = ?, lease_until = ?,"
                        f" next_attempt_at = ? WHERE id IN ({self._marks(len(ids))}) RETURNING "
                        + self._select.removeprefix("SELECT ").removesuffix(" FROM documents")
                    ),
                    (owner, until, until, *ids),
                )
                records = {r.id: r for r in map(self._row_to_record, cur.fetchall())}
            return [records[i] for i in ids if i in records]

        return self._retrying(take)

    def next_due(self, provider: str | None = None) -> float | None:
        where, params = self._due(None, provider)
        with self._tx(write=False) as cur:
            cur.execute(self._sql(f"SELECT MIN(next_attempt_at) FROM documents{where}"), params)
            row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def extend_leases(self, owner: str, doc_ids: Sequence[str], until: float) -> set[str]:
        if not doc_ids:
            return set()
        g = self.greatest
        marks = self._marks(len(doc_ids))
        mine = f"lease_owner = ? AND id IN ({marks})"
        # Never shortened (a test clock may have set a lease in the future); lost when another
        # owner has it or the document was let go. Where rows are locked (PostgreSQL), a row
        # another transaction holds is skipped, not waited for: an ERP transaction that
        # wrote one document must not stop the renewal of all the others (their leases
        # would run out under a live worker). A skipped row still ours counts as held; the
        # next beat extends it.
        target = (
            f"id IN (SELECT id FROM documents WHERE {mine}{self.claim_lock})"
            if self.claim_lock
            else mine
        )
        sql = (
            f"UPDATE documents SET lease_until = {g}(COALESCE(lease_until, ?), ?),"
            f" next_attempt_at = {g}(COALESCE(lease_until, ?), ?) WHERE {target} RETURNING id"
        )

        def extend() -> set[str]:
            with self._tx() as cur:
                cur.execute(self._sql(sql), (until, until, until, until, owner, *doc_ids))
                held = {str(r[0]) for r in cur.fetchall()}
                if self.claim_lock and len(held) < len(doc_ids):
                    rest = [i for i in doc_ids if i not in held]
                    cur.execute(
                        self._sql(
                            "SELECT id FROM documents WHERE lease_owner = ?"
                            f" AND id IN ({self._marks(len(rest))})"
                        ),
                        (owner, *rest),
                    )
                    held |= {str(r[0]) for r in cur.fetchall()}
                return held

        return self._retrying(extend)

    def recover_dead_owners(self, now: float, force: bool = False) -> int:
        """Make the documents leased by provably dead owners (:func:`owner_is_dead`: a
        process of this machine that is gone) due at *now* instead of when their lease runs
        out; returns how many. Looks at most every :attr:`dead_owner_check` seconds (the
        first claim of a process always looks)."""
        if not force:
            if self.dead_owner_check <= 0:
                return 0
            mono = time.monotonic()
            if self._dead_checked is not None and mono - self._dead_checked < self.dead_owner_check:
                return 0
            self._dead_checked = mono
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT DISTINCT lease_owner FROM documents"
                    " WHERE lease_owner IS NOT NULL AND lease_until > ?"
                ),
                (now,),
            )
            owners = [str(r[0]) for r in cur.fetchall()]
        total = 0
        for o in filter(owner_is_dead, owners):
            with self._tx() as cur:
                cur.execute(
                    self._sql(
                        "UPDATE documents SET lease_until = ?, next_attempt_at = ?"
                        " WHERE lease_owner = ? AND lease_until > ?"
                    ),
                    (now, now, o, now),
                )
                n = int(cur.rowcount)
            total += n
            if n:
                log.warning(
                    "worker %s is gone (its process ended): %d leased document(s) taken over "
                    "now instead of at the end of their lease",
                    o.rsplit(":", 2)[0],
                    n,
                )
        return total

    def wake_held(self, provider: str, now: float) -> int:
        # Called after every delivery: look first (no write lock) and write only when the
        # provider has a held document to wake.
        free = " WHERE provider = ? AND state = ? AND (lease_until IS NULL OR lease_until < ?)"
        params = (provider, DocState.HELD.value, now)
        with self._tx(write=False) as cur:
            cur.execute(self._sql("SELECT 1 FROM documents" + free + " LIMIT 1"), params)
            if cur.fetchone() is None:
                return 0

        def wake() -> int:
            with self._tx() as cur:
                cur.execute(
                    self._sql("UPDATE documents SET next_attempt_at = ?" + free), (now, *params)
                )
                return int(cur.rowcount)

        return self._retrying(wake)
