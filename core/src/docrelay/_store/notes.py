"""Notifications in SQL: received answers of providers, deduplicated per delivery round."""

from __future__ import annotations

import json
from typing import Any

from .._models import Outcome
from .._records import dump_outcome, load_outcome
from .._redact import redact
from .sql import SQLBase

__all__ = ["Notifications"]


class Notifications(SQLBase):
    """Keeping and applying notifications."""

    # -- notifications --------------------------------------------------------------------------
    def _round(self, cur: Any, doc_id: str) -> int:
        """The document's delivery round, named by the number of its first send attempt.

        A round starts with the first send after a submit, a new revision or a requeue (they
        clear ``first_attempt_at``; the send that follows sets it) and includes the resends
        after a lost answer or a retry. Before that first send (queued after a requeue), the
        previous round is still the current one.
        """
        cur.execute(self._sql("SELECT first_attempt_at FROM documents WHERE id = ?"), (doc_id,))
        row = cur.fetchone()
        first = row[0] if row else None
        if first is None:
            cur.execute(
                self._sql("SELECT MAX(number) FROM attempts WHERE doc_id = ? AND action = 'send'"),
                (doc_id,),
            )
        else:
            cur.execute(
                self._sql(
                    "SELECT MIN(number) FROM attempts WHERE doc_id = ? AND action = 'send'"
                    " AND started_at >= ?"
                ),
                (doc_id, float(first) - 1e-6),
            )
        found = cur.fetchone()
        return int(found[0] or 0) if found else 0

    def record_notification(
        self,
        provider: str,
        digest: str,
        doc_id: str | None,
        key: str | None,
        provider_ref: str | None,
        outcome: Outcome | None,
        body: bytes,
        now: float,
        *,
        stored_body_limit: int | None = None,
        max_unmatched: int | None = None,
        max_per_document: int | None = None,
        not_applied: str | None = None,
    ) -> bool:
        if doc_id is None and stored_body_limit is not None:
            body = body[:stored_body_limit]
        with self._tx() as cur:
            if doc_id is not None:
                # Dedup per round: the same answer after a resend is the new round's answer.
                digest = f"{digest}@{self._round(cur, doc_id)}"
            cur.execute(
                self._sql(
                    "INSERT INTO notifications (provider, digest, doc_id, key, provider_ref,"
                    " outcome, body, received_at, applied, note)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (provider, digest) DO NOTHING"
                ),
                (
                    provider,
                    digest,
                    doc_id,
                    key,
                    provider_ref,
                    dump_outcome(outcome),
                    redact(body.decode("utf-8", "replace")).encode(),
                    now,
                    0 if not_applied is None else 2,
                    not_applied,
                ),
            )
            if cur.rowcount == 0:
                return False  # the same one (also when another worker kept it just now)
            if doc_id is None and max_unmatched is not None:
                self._drop_unmatched(cur, provider, max_unmatched)
            if doc_id is not None and max_per_document is not None:
                self._drop_settled(cur, provider, doc_id, max_per_document)
        return True

    def _drop_settled(self, cur: Any, provider: str, doc_id: str, cap: int) -> None:
        """Keep at most *cap* settled notifications of one document (a provider, or anyone
        with its secret, redelivering distinct answers for a final document must not grow
        the store without bound); a waiting one (``applied = 0``) is never dropped."""
        cur.execute(
            self._sql(
                "SELECT COUNT(*) FROM notifications WHERE provider = ? AND doc_id = ?"
                " AND applied <> 0"
            ),
            (provider, doc_id),
        )
        extra = int(cur.fetchone()[0]) - cap
        if extra <= 0:
            return
        cur.execute(
            self._sql(
                "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
                " WHERE provider = ? AND doc_id = ? AND applied <> 0"
                " ORDER BY CASE WHEN applied = 2 THEN 0 ELSE 1 END, id LIMIT ?)"
            ),
            (provider, doc_id, extra),
        )
        # The rows deleted, not *extra*: a concurrent writer (PostgreSQL, read committed)
        # may have deleted the same oldest ones first, and those are counted by it.
        if cur.rowcount > 0:
            self._count_dropped(cur, provider, cur.rowcount)

    def _drop_unmatched(self, cur: Any, provider: str, cap: int) -> None:
        cur.execute(
            self._sql("SELECT COUNT(*) FROM notifications WHERE provider = ? AND doc_id IS NULL"),
            (provider,),
        )
        extra = int(cur.fetchone()[0]) - cap
        if extra <= 0:
            return
        cur.execute(
            self._sql(
                "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
                " WHERE provider = ? AND doc_id IS NULL ORDER BY id LIMIT ?)"
            ),
            (provider, extra),
        )
        if cur.rowcount > 0:  # the rows deleted (a concurrent writer may have taken some)
            self._count_dropped(cur, provider, cur.rowcount)

    def _count_dropped(self, cur: Any, provider: str, n: int) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO docrelay_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO"
                " UPDATE SET value = CAST(CAST(docrelay_meta.value AS INTEGER) + ? AS TEXT)"
            ),
            (f"notifications_dropped:{provider}", str(n), n),
        )

    def notification_stats(self) -> dict[str, dict[str, int]]:
        with self._tx(write=False) as cur:
            cur.execute(
                "SELECT provider, COUNT(*), SUM(CASE WHEN doc_id IS NULL THEN 1 ELSE 0 END)"
                " FROM notifications GROUP BY provider"
            )
            stats = {
                p: {"stored": int(n), "unmatched": int(u or 0), "dropped": 0}
                for p, n, u in cur.fetchall()
            }
            cur.execute(
                self._sql("SELECT key, value FROM docrelay_meta WHERE key LIKE ?"),
                ("notifications_dropped:%",),
            )
            for k, v in cur.fetchall():
                name = k.split(":", 1)[1]
                stats.setdefault(name, {"stored": 0, "unmatched": 0, "dropped": 0})
                stats[name]["dropped"] = int(v)
        return stats

    def pending_notifications(self, provider: str, doc_id: str) -> list[tuple[int, Outcome]]:
        with self._tx(write=False) as cur:
            current = self._round(cur, doc_id)
            cur.execute(
                self._sql(
                    "SELECT id, outcome FROM notifications WHERE provider = ? AND doc_id = ?"
                    " AND applied = 0 AND outcome IS NOT NULL"
                    " AND (digest LIKE ? OR digest NOT LIKE ?) ORDER BY id"
                ),
                (provider, doc_id, f"%@{current}", "%@%"),
            )
            rows = cur.fetchall()
        return [(int(i), o) for i, s in rows if (o := load_outcome(s)) is not None]

    def mark_notification(
        self, note_id: int, applied: bool, note: str, *, if_waiting: bool = False
    ) -> None:
        sql = "UPDATE notifications SET applied = ?, note = ? WHERE id = ?"
        with self._tx() as cur:
            cur.execute(
                self._sql(sql + (" AND applied = 0" if if_waiting else "")),
                (1 if applied else 2, note, note_id),
            )

    def notifications(self, doc_id: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, provider, doc_id, key, provider_ref, outcome, received_at, applied, note"
            " FROM notifications"
        )
        params: list[Any] = []
        if doc_id is not None:
            sql += " WHERE doc_id = ?"
            params.append(doc_id)
        with self._tx(write=False) as cur:
            cur.execute(self._sql(sql + " ORDER BY id"), params)
            rows = cur.fetchall()
        names = (
            "id",
            "provider",
            "doc_id",
            "key",
            "provider_ref",
            "outcome",
            "received_at",
            "applied",
            "note",
        )
        out = []
        for r in rows:
            d = dict(zip(names, r, strict=True))
            d["outcome"] = json.loads(d["outcome"]) if d["outcome"] else None
            out.append(d)
        return out
