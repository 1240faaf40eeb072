"""Transitions in SQL: one UPDATE per state change (with its attempt upserted in the same
transaction), several changes in one transaction (group commit), and the requeue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _lifecycle
from .._models import Attempt
from .._records import LeaseLost, Record, Transition, dump_outcome
from .._redact import redact
from ..exceptions import NotFoundError
from .sql import SQLBase

__all__ = ["Transitions"]

_ATTEMPT_COLUMNS = (
    "doc_id",
    "number",
    "revision",
    "key",
    "action",
    "started_at",
    "request",
    "status",
    "outcome",
    "duration",
)
_UPSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_ATTEMPT_COLUMNS))})"
    " ON CONFLICT (doc_id, number) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ATTEMPT_COLUMNS[2:])
)


def _attempt_values(a: Attempt, outcome_json: str | None) -> tuple[Any, ...]:
    return (
        a.doc_id,
        a.number,
        a.revision,
        a.key,
        a.action,
        a.started_at,
        redact(a.request) if a.request else None,
        a.status,
        outcome_json,
        a.duration,
    )


class Transitions(SQLBase):
    """Applying transitions."""

    def _apply_statements(
        self,
        doc_id: str,
        owner: str | None,
        t: Transition,
        now: float,
        expect_state: str | None = None,
    ) -> tuple[tuple[str, list[Any]], tuple[str, tuple[Any, ...]] | None]:
        """The SQL of one change: its UPDATE, and its attempt's upsert (``None`` without an
        attempt), to be run only when the UPDATE found its row. (The PostgreSQL store sends
        a batch's changes as one message, each with its attempt in one statement.)"""
        values = t.columns()
        values["updated_at"] = now
        sql = "UPDATE documents SET " + ", ".join(f"{c} = ?" for c in values) + " WHERE id = ?"
        params: list[Any] = [*values.values(), doc_id]
        if owner is not None:
            sql += " AND lease_owner = ?"
            params.append(owner)
        if expect_state is not None:
            sql += " AND state = ? AND (lease_until IS NULL OR lease_until < ?)"
            params.extend([expect_state, now])
        a = t.attempt
        if a is None:
            return (self._sql(sql), params), None
        # The attempt's outcome is usually the document's: serialised once.
        same = "outcome" in values and t.outcome is a.outcome
        dumped = values["outcome"] if same else dump_outcome(a.outcome)
        return (self._sql(sql), params), (self._sql(_UPSERT_ATTEMPT), _attempt_values(a, dumped))

    def _apply(
        self,
        cur: Any,
        doc_id: str,
        owner: str | None,
        t: Transition,
        now: float,
        expect_state: str | None = None,
        attempts: list[tuple[Any, ...]] | None = None,
    ) -> bool:
        """One UPDATE (and the attempt's upsert) in the open transaction; ``False`` when the
        lease (or the expected state) is not there. With *attempts*, the attempt's row is
        appended there for the caller's one ``executemany`` instead of written here."""
        update, attempt = self._apply_statements(doc_id, owner, t, now, expect_state)
        cur.execute(*update)
        if cur.rowcount == 0:
            return False
        if attempt is not None:
            if attempts is None:
                cur.execute(*attempt)
            else:
                attempts.append(attempt[1])
        return True

    def apply(
        self,
        doc_id: str,
        owner: str | None,
        transition: Transition,
        now: float,
        expect_state: str | None = None,
    ) -> None:

        def write() -> bool:
            with self._tx() as cur:
                if self._apply(cur, doc_id, owner, transition, now, expect_state):
                    return True
                if self._get(cur, doc_id) is None:
                    raise NotFoundError(f"no document {doc_id!r}")
            return False

        if not self._retrying(write):
            raise LeaseLost(f"lease on {doc_id!r} lost")

    def apply_many(
        self, changes: Sequence[tuple[str, str | None, Transition]], now: float
    ) -> list[str]:
        if not changes:
            return []

        def write() -> list[str]:
            # All of it again on a deadlock or an ended session (the server rolled it back).
            lost: list[str] = []
            attempts: list[tuple[Any, ...]] = []
            with self._tx() as cur:
                for doc_id, owner, transition in changes:
                    if not self._apply(cur, doc_id, owner, transition, now, attempts=attempts):
                        lost.append(doc_id)
                if attempts:
                    # The attempts of the changes applied, in one statement.
                    cur.executemany(self._sql(_UPSERT_ATTEMPT), attempts)
            return lost

        return self._retrying(write)

    def requeue(self, doc_id: str, now: float) -> Record:
        with self._tx() as cur:
            rec = self._get(cur, doc_id, lock=True)
            transition = _lifecycle.requeue(rec, doc_id, now)
            assert rec is not None
            self._apply(cur, doc_id, None, transition, now)
            cur.execute(
                self._sql("DELETE FROM provider_pauses WHERE provider = ?"), (rec.provider,)
            )
        return transition.applied(rec, now)
