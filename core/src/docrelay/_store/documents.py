"""Documents in SQL: submitting (as the lifecycle admits), reading and finding them, and
their attempt history."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .. import _lifecycle
from .._models import Attempt, Document
from .._records import Record, load_outcome
from ..exceptions import DocumentError
from .sql import SQLBase

__all__ = ["Documents", "insert_sql", "insert_values", "iter_chunks", "revise_sql", "revise_values"]

#: ``{payload}``: the name of the row's payload column (:attr:`SQLBase.payload_column`).
_INSERT = (
    "INSERT INTO documents (id, provider, kind, content_type, metadata, {payload}, revision,"
    " state, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_REVISE = (
    "UPDATE documents SET kind = ?, content_type = ?, metadata = ?, {payload} = ?, revision = ?,"
    " state = ?, previous_key = ?, previous_state = ?, key = NULL, key_revision = NULL,"
    " attempts = 0, polls = 0, next_attempt_at = ?, lease_owner = NULL, lease_until = NULL,"
    " reason = ?, first_attempt_at = NULL, updated_at = ? WHERE id = ?"
)


def insert_sql(table: str = "documents", column: str = "payload") -> str:
    """The INSERT of a new document (``?`` placeholders) into *table* (a qualified name
    where the outbox writes on another application's connection), whose row's payload
    column is *column* (the store's :attr:`~docrelay._store.sql.SQLBase.payload_column`)."""
    return _INSERT.format(payload=column).replace("INTO documents", f"INTO {table}", 1)


def revise_sql(table: str = "documents", column: str = "payload") -> str:
    """The UPDATE that makes a stored document a new revision's record (*table*, *column*:
    as for :func:`insert_sql`)."""
    return _REVISE.format(payload=column).replace("UPDATE documents", f"UPDATE {table}", 1)


#: A payload kept apart (see :func:`~docrelay._store.schema.payload_tables`).
_PAYLOAD = (
    "INSERT INTO payloads (id, revision, payload) VALUES (?, ?, ?) ON CONFLICT (id)"
    " DO UPDATE SET revision = excluded.revision, payload = excluded.payload"
)


def insert_values(rec: Record, inline: bool = True) -> tuple[Any, ...]:
    """The parameters of :func:`insert_sql` for the new document's record *rec* (*inline*:
    with the payload in the row; else it goes to the ``payloads`` table)."""
    d = rec.document
    return (
        d.id,
        d.provider,
        d.kind,
        d.content_type,
        json.dumps(dict(d.metadata)) if d.metadata else "{}",
        d.payload if inline else b"",
        d.revision,
        rec.state.value,
        rec.next_attempt_at,
        rec.created_at,
        rec.updated_at,
    )


def revise_values(rec: Record, inline: bool = True) -> tuple[Any, ...]:
    """The parameters of :func:`revise_sql` for the new revision's record *rec* (*inline*:
    as for :func:`insert_values`)."""
    d = rec.document
    return (
        d.kind,
        d.content_type,
        json.dumps(dict(d.metadata)),
        d.payload if inline else b"",
        d.revision,
        rec.state.value,
        rec.previous_key,
        rec.previous_state,
        rec.next_attempt_at,
        rec.reason,
        rec.updated_at,
        d.id,
    )


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Documents(SQLBase):
    """Submitting and reading documents."""

    def submit(self, document: Document, now: float) -> tuple[Record, str]:
        for _ in range(2):  # a second look when another worker inserted the same id just now
            with self._tx() as cur:
                rec, how = _lifecycle.admit(self._get(cur, document.id, lock=True), document, now)
                if how is _lifecycle.Admission.NEW:
                    cur.execute(
                        self._sql(
                            insert_sql(column=self.payload_column) + " ON CONFLICT (id) DO NOTHING"
                        ),
                        insert_values(rec, inline=not self.payload_apart),
                    )
                    if cur.rowcount == 0:
                        continue
                    self._keep_payload(cur, [rec.document])
                elif how is _lifecycle.Admission.REVISION:
                    self._revise(cur, rec)
                return rec, how.value
        raise AssertionError("unreachable: the second look sees the stored document")

    def _revise(self, cur: Any, rec: Record) -> None:
        cur.execute(
            self._sql(revise_sql(column=self.payload_column)),
            revise_values(rec, inline=not self.payload_apart),
        )
        self._keep_payload(cur, [rec.document])

    def _keep_payload(self, cur: Any, documents: Sequence[Document]) -> None:
        """Store the payloads of *documents* apart, where this store keeps them apart."""
        if self.payload_apart and documents:
            cur.executemany(self._sql(_PAYLOAD), [(d.id, d.revision, d.payload) for d in documents])

    def submit_many(self, documents: Sequence[Document], now: float) -> int:
        seen: set[str] = set()
        for d in documents:
            if d.id in seen:
                raise DocumentError(f"document id {d.id!r} is given twice")
            seen.add(d.id)
        with self._tx() as cur:
            # All or nothing: an id already stored refuses the whole batch (nothing written).
            for chunk in iter_chunks(seen, 500):
                cur.execute(
                    self._sql(f"SELECT id FROM documents WHERE id IN ({self._marks(len(chunk))})"),
                    chunk,
                )
                row = cur.fetchone()
                if row is not None:
                    raise DocumentError(
                        f"document {row[0]!r} is already stored; submit_many stores new "
                        "documents only (submit a corrected revision with submit)"
                    )
            inline = not self.payload_apart
            cur.executemany(
                self._sql(insert_sql(column=self.payload_column)),
                [insert_values(_lifecycle.admit(None, d, now)[0], inline) for d in documents],
            )
            self._keep_payload(cur, documents)
        return len(documents)

    def get(self, doc_id: str) -> Record | None:
        with self._tx(write=False) as cur:
            return self._get(cur, doc_id)

    def select(
        self,
        *,
        ids: Sequence[str] | None = None,
        states: Sequence[str] | None = None,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        where: list[str] = []
        params: list[Any] = []
        if ids is not None:
            if not ids:
                return []
            where.append(f"id IN ({self._marks(len(ids))})")
            params.extend(ids)
        if states:
            where.append(f"state IN ({self._marks(len(states))})")
            params.extend(states)
        if provider:
            where.append("provider = ?")
            params.append(provider)
        sql = self._select + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._tx(write=False) as cur:
            cur.execute(self._sql(sql), params)
            return [self._row_to_record(r) for r in cur.fetchall()]

    def find(self, provider: str, kind: str | None, metadata: Mapping[str, str]) -> list[Record]:
        sql, params = self._select + " WHERE provider = ?", [provider]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        for k, v in metadata.items():  # filtered in SQL; checked again below, exactly
            if '"' not in k and "\\" not in k:
                sql += f" AND {self.metadata_value} = ?"
                params += [k, v]
        with self._tx(write=False) as cur:
            cur.execute(self._sql(sql), params)
            records = [self._row_to_record(r) for r in cur.fetchall()]
        return [
            r for r in records if all(r.document.metadata.get(k) == v for k, v in metadata.items())
        ]

    def find_by_key(self, provider: str, key: str) -> Record | None:
        with self._tx(write=False) as cur:
            for column in ("key", "previous_key"):
                cur.execute(
                    self._sql(self._select + f" WHERE provider = ? AND {column} = ?"),
                    (provider, key),
                )
                row = cur.fetchone()
                if row is not None:
                    return self._row_to_record(row)
        return None

    def find_by_ref(self, provider: str, ref: str) -> Record | None:
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(self._select + " WHERE provider = ? AND provider_ref = ?"),
                (provider, ref),
            )
            row = cur.fetchone()
            return None if row is None else self._row_to_record(row)

    def counts(self) -> dict[str, int]:
        with self._tx(write=False) as cur:
            cur.execute("SELECT state, COUNT(*) FROM documents GROUP BY state")
            return {s: int(n) for s, n in cur.fetchall()}

    def depth(self) -> dict[tuple[str, str], int]:
        with self._tx(write=False) as cur:
            cur.execute("SELECT provider, state, COUNT(*) FROM documents GROUP BY provider, state")
            return {(p, st): int(n) for p, st, n in cur.fetchall()}

    # -- history --------------------------------------------------------------------------------
    def history(self, doc_id: str) -> list[Attempt]:
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT doc_id, number, revision, key, action, started_at, request, status,"
                    " outcome, duration FROM attempts WHERE doc_id = ? ORDER BY number"
                ),
                (doc_id,),
            )
            rows = cur.fetchall()
        names = ("doc_id", "number", "revision", "key", "action", "started_at", "request")
        return [
            Attempt(
                **dict(zip(names, r[:7], strict=True)),
                status=r[7],
                outcome=load_outcome(r[8]),
                duration=r[9],
            )
            for r in rows
        ]

    def next_attempt_number(self, doc_id: str) -> int:
        with self._tx(write=False) as cur:
            cur.execute(self._sql("SELECT MAX(number) FROM attempts WHERE doc_id = ?"), (doc_id,))
            row = cur.fetchone()
        return int(row[0] or 0) + 1

    def next_attempt_numbers(self, doc_ids: Sequence[str]) -> dict[str, int]:
        out = dict.fromkeys(doc_ids, 1)
        if not out:
            return out
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT doc_id, MAX(number) FROM attempts"
                    f" WHERE doc_id IN ({self._marks(len(out))}) GROUP BY doc_id"
                ),
                list(out),
            )
            for doc_id, number in cur.fetchall():
                out[str(doc_id)] = int(number or 0) + 1
        return out
