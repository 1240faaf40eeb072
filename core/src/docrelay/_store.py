"""The state store: the interface, the record type, and the SQL implementation shared by the
SQLite and PostgreSQL backends (they differ only in connections, placeholders, locking and
the claim query)."""

from __future__ import annotations

import abc
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from typing import Any

import attrs

from ._models import (
    Attempt,
    DocState,
    Document,
    Outcome,
)
from ._redact import redact, redact_any, redact_outcome
from .exceptions import DocumentError, NotFoundError, StoreError

__all__ = ["LeaseLost", "Record", "Store", "open_store", "owner_is_dead", "process_identity"]

log = logging.getLogger("docrelay.store")

#: The schema version this docrelay writes. A store with a newer version is refused.
SCHEMA_VERSION = 1
APP_ID = "docrelay"


class LeaseLost(StoreError):
    """The worker no longer holds the document's lease (another worker took it over)."""


# -- owners ------------------------------------------------------------------------------------
# A lease owner reads ``HOST:PID:pBOOT.PIDNS.START:RANDOM:THREAD``. The third part lets another
# worker on the same machine prove that the owner is gone: same kernel (boot id), same PID
# namespace, and process PID either absent, a zombie, or started at another time (PID reused).


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


@cache
def _machine() -> tuple[str, str] | None:
    """(boot id, PID namespace) of this kernel and container, or ``None`` without /proc."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if not boot:
        return None
    return boot.replace("-", "")[:16], "".join(c for c in ns if c.isdigit())


def _process_start(pid: int) -> str | None:
    """Start time of process *pid* (clock ticks since boot); ``""`` when it is gone or a
    zombie; ``None`` when that cannot be told (no permission)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    if fields[0] in ("Z", "X"):
        return ""  # dead, not yet reaped by its parent
    return fields[19]


@cache
def _identity(pid: int) -> str:
    machine = _machine()
    start = _process_start(pid) if machine else None
    tag = f"p{machine[0]}.{machine[1]}.{start}" if machine and start else "p?"
    return f"{socket.gethostname()}:{pid}:{tag}"


def process_identity() -> str:
    """``HOST:PID:TAG`` of this process: the start of every lease owner it uses."""
    return _identity(os.getpid())


def owner_is_dead(owner: str) -> bool:
    """Whether the process behind lease *owner* is provably gone: on this machine (same host
    name, boot and PID namespace) and its PID absent, a zombie, or another process now.
    Owners on other machines, of unknown form, or still alive are never called dead."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[2].startswith("p") or not parts[1].isdigit():
        return False
    host, pid, tag = parts[0], int(parts[1]), parts[2][1:]
    machine = _machine()
    if machine is None or host != socket.gethostname():
        return False
    boot, _, rest = tag.partition(".")
    ns, _, start = rest.partition(".")
    if (boot, ns) != machine or not start:
        return False
    now_start = _process_start(pid)
    if now_start is None:
        return False
    return now_start != start


@attrs.frozen
class Record:
    """A document as stored, with its delivery state."""

    document: Document
    state: DocState = attrs.field(converter=DocState)
    key: str | None = None
    key_revision: str | None = None
    previous_key: str | None = None
    previous_state: str | None = None
    attempts: int = 0
    polls: int = 0
    failures: int = 0
    next_attempt_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    provider_ref: str | None = None
    provider_state: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    first_attempt_at: float | None = None

    @property
    def id(self) -> str:
        return self.document.id

    @property
    def provider(self) -> str:
        return self.document.provider


_DOC_COLUMNS = (
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
_QUEUED = DocState.QUEUED.value
#: Columns the engine may change with :meth:`Store.update`.
UPDATABLE = frozenset(_DOC_COLUMNS) - {"id", "provider", "created_at"}


def _dump_outcome(outcome: Outcome | None) -> str | None:
    return None if outcome is None else json.dumps(redact_outcome(outcome).to_dict())


def _load_outcome(value: str | None) -> Outcome | None:
    return None if not value else Outcome.from_dict(json.loads(value))


def submission_refusal(existing: Record | None, document: Document) -> str | None:
    """Why *document* may not be stored over *existing* (``None`` when it may)."""
    if existing is None:
        return None
    if existing.provider != document.provider:
        return f"document {document.id!r} is already stored for provider {existing.provider!r}"
    if existing.document.revision == document.revision:
        return None
    if existing.state in (DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION):
        return (
            f"document {document.id!r} was already {existing.state.value}; a changed document "
            "needs a new id"
        )
    if existing.state in (DocState.SENDING, DocState.ACCEPTED, DocState.UNKNOWN):
        return (
            f"document {document.id!r} is {existing.state.value} at the provider; submit a "
            "correction once it has an answer"
        )
    return None


class Store(abc.ABC):
    """What the engine needs from a state store. All times are epoch seconds."""

    url: str

    # documents ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, document: Document, now: float) -> tuple[Record, str]:
        """Store *document*; returns the record and ``"new"``, ``"unchanged"`` or
        ``"revision"`` (a corrected revision of a known document, re-queued)."""

    @abc.abstractmethod
    def submit_many(self, documents: Sequence[Document], now: float) -> int:
        """Store many new documents in one transaction (bulk enqueue); returns how many."""

    @abc.abstractmethod
    def get(self, doc_id: str) -> Record | None: ...

    @abc.abstractmethod
    def select(
        self,
        *,
        ids: Sequence[str] | None = None,
        states: Sequence[str] | None = None,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Record]: ...

    @abc.abstractmethod
    def find(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[Record]: ...

    @abc.abstractmethod
    def find_by_key(self, provider: str, key: str) -> Record | None:
        """The document whose current or previous key is *key*."""

    @abc.abstractmethod
    def find_by_ref(self, provider: str, ref: str) -> Record | None: ...

    @abc.abstractmethod
    def counts(self) -> dict[str, int]: ...

    # claiming ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def claim(
        self, owner: str, now: float, lease: float, limit: int, provider: str | None = None
    ) -> list[Record]:
        """Lease up to *limit* due documents (``next_attempt_at <= now``, provider not paused)
        to *owner* until ``now + lease``. A claimed document's ``next_attempt_at`` becomes the
        lease's end, so a worker that dies leaves it due again when the lease expires."""

    @abc.abstractmethod
    def next_due(self, provider: str | None = None) -> float | None:
        """The earliest ``next_attempt_at`` of any document (paused providers excluded)."""

    @abc.abstractmethod
    def update(
        self,
        doc_id: str,
        owner: str | None,
        changes: Mapping[str, Any],
        attempt: Attempt | None = None,
        now: float | None = None,
        expect_state: str | None = None,
    ) -> Record:
        """Change a document (and insert or replace one attempt) in one transaction.

        With *owner*, the change only happens while *owner* holds the lease; with
        *expect_state*, only while the document is in that state and not leased (else
        :class:`LeaseLost`)."""

    def write(
        self,
        doc_id: str,
        owner: str | None,
        changes: Mapping[str, Any],
        attempt: Attempt | None = None,
        now: float | None = None,
    ) -> None:
        """:meth:`update` for a caller that does not need the record back (a store may then
        skip reading it again)."""
        self.update(doc_id, owner, changes, attempt=attempt, now=now)

    @abc.abstractmethod
    def wake_held(self, provider: str, now: float) -> int:
        """Make *provider*'s held documents due now (another document changed state)."""

    @abc.abstractmethod
    def extend_lease(self, doc_id: str, owner: str, until: float) -> None: ...

    @abc.abstractmethod
    def requeue(self, doc_id: str, now: float) -> Record: ...

    # history -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def history(self, doc_id: str) -> list[Attempt]: ...

    @abc.abstractmethod
    def next_attempt_number(self, doc_id: str) -> int: ...

    # notifications -----------------------------------------------------------------------------
    @abc.abstractmethod
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
    ) -> bool:
        """Keep a received notification; ``False`` if the same one (digest) was seen in the
        same delivery round of *doc_id* (its latest send), or ever when it matches no
        document. An unmatched one is stored with its body cut to *stored_body_limit*, and
        at most *max_unmatched* of them per provider are kept (the oldest are dropped and
        counted in :meth:`notification_stats`)."""

    @abc.abstractmethod
    def pending_notifications(self, provider: str, doc_id: str) -> list[tuple[int, Outcome]]:
        """Notifications for *doc_id* not applied yet (they came before the send finished),
        from the document's current delivery round only."""

    def notification_stats(self) -> dict[str, dict[str, int]]:
        """Per provider: notifications ``stored``, ``unmatched`` among them, and unmatched
        ones ``dropped`` to keep within the cap."""
        return {}

    @abc.abstractmethod
    def mark_notification(self, note_id: int, applied: bool, note: str) -> None: ...

    @abc.abstractmethod
    def notifications(self, doc_id: str | None = None) -> list[dict[str, Any]]: ...

    # providers ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def pause_provider(self, provider: str, reason: str, until: float | None, now: float) -> None:
        """Stop claiming *provider*'s documents (a config error) until *until* or a resume."""

    @abc.abstractmethod
    def resume_provider(self, provider: str) -> None: ...

    @abc.abstractmethod
    def paused(self, now: float) -> dict[str, tuple[str, float | None]]:
        """Paused providers: name -> (reason, until)."""

    # shared limits -----------------------------------------------------------------------------
    def rate_slot(self, bucket: str, interval: float, now: float) -> float | None:
        """Reserve the next send slot of *bucket* spaced *interval* apart, shared by every
        worker of this store; returns the time the slot starts, or ``None`` when the store
        does not share rate limits across processes (the engine limits in-process)."""
        return None

    def shared_token(self, credential: str, now: float) -> tuple[str, float] | None:
        """A token another worker fetched for *credential* (``(value, expires_at)``)."""
        return None

    def save_token(self, credential: str, value: str, expires_at: float) -> None:
        """Share a token with the other workers of this store (no-op when not shared)."""
        return

    def drop_token(self, credential: str, value: str) -> None:
        """Forget a shared token that the provider refused."""
        return

    def token_lock(self, credential: str) -> AbstractContextManager[None] | None:
        """A lock held while fetching a token, across workers (``None``: in-process only).

        The token fetch runs while it is held: a store must not keep a transaction (on SQLite:
        the write lock) open for it."""
        return None

    # lifecycle ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# SQL implementation
# ---------------------------------------------------------------------------------------------


class SQLStore(Store):
    """The store in SQL; subclasses provide connections and dialect details."""

    #: placeholder of the DB-API driver ("?" or "%s").
    ph = "?"
    blob_type = "BLOB"
    real_type = "REAL"
    serial_pk = "INTEGER PRIMARY KEY AUTOINCREMENT"
    #: SQL of one metadata value (the key bound as the ``?``; PostgreSQL overrides it).
    metadata_value = "json_extract(metadata, '$.\"' || ? || '\"')"

    # -- dialect hooks --------------------------------------------------------------------------
    @abc.abstractmethod
    def _tx(self, write: bool = True) -> AbstractContextManager[Any]:
        """A transaction: yields a cursor; commits on success, rolls back on error."""

    @abc.abstractmethod
    def _claim_ids(
        self, cur: Any, now: float, limit: int, provider: str | None, paused: Sequence[str]
    ) -> list[str]:
        """Select (and lock, where the database can) the ids of due documents."""

    def _sql(self, sql: str) -> str:
        return sql if self.ph == "?" else sql.replace("?", self.ph)

    def _blob(self, value: Any) -> bytes:
        return bytes(value) if value is not None else b""

    # -- schema ---------------------------------------------------------------------------------
    def _schema(self) -> list[str]:
        b, r = self.blob_type, self.real_type
        return [
            "CREATE TABLE IF NOT EXISTS docrelay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"""CREATE TABLE IF NOT EXISTS documents (
                id TEXT PRIMARY KEY, provider TEXT NOT NULL, kind TEXT NOT NULL,
                content_type TEXT NOT NULL, metadata TEXT NOT NULL, payload {b} NOT NULL,
                revision TEXT NOT NULL, state TEXT NOT NULL, key TEXT, key_revision TEXT,
                previous_key TEXT, previous_state TEXT,
                attempts INTEGER NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0,
                failures INTEGER NOT NULL DEFAULT 0, next_attempt_at {r},
                lease_owner TEXT, lease_until {r}, outcome TEXT, reason TEXT, provider_ref TEXT,
                provider_state TEXT NOT NULL DEFAULT '{{}}', created_at {r} NOT NULL,
                updated_at {r} NOT NULL, first_attempt_at {r})""",
            "CREATE INDEX IF NOT EXISTS documents_due ON documents (next_attempt_at)"
            " WHERE next_attempt_at IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS documents_key ON documents (provider, key)",
            "CREATE INDEX IF NOT EXISTS documents_prev_key ON documents (provider, previous_key)",
            "CREATE INDEX IF NOT EXISTS documents_ref ON documents (provider, provider_ref)",
            "CREATE INDEX IF NOT EXISTS documents_state ON documents (state, provider)",
            "CREATE INDEX IF NOT EXISTS documents_kind ON documents (provider, kind)",
            f"""CREATE TABLE IF NOT EXISTS attempts (
                doc_id TEXT NOT NULL, number INTEGER NOT NULL, revision TEXT NOT NULL,
                key TEXT, action TEXT NOT NULL, started_at {r} NOT NULL, request TEXT,
                status INTEGER, outcome TEXT, duration {r}, PRIMARY KEY (doc_id, number))""",
            f"""CREATE TABLE IF NOT EXISTS notifications (
                id {self.serial_pk}, provider TEXT NOT NULL, digest TEXT NOT NULL,
                doc_id TEXT, key TEXT, provider_ref TEXT, outcome TEXT, body {b},
                received_at {r} NOT NULL, applied INTEGER NOT NULL DEFAULT 0, note TEXT)""",
            "CREATE UNIQUE INDEX IF NOT EXISTS notifications_digest"
            " ON notifications (provider, digest)",
            "CREATE INDEX IF NOT EXISTS notifications_doc ON notifications (doc_id)",
            f"""CREATE TABLE IF NOT EXISTS provider_pauses (
                provider TEXT PRIMARY KEY, reason TEXT NOT NULL, since {r} NOT NULL,
                until {r})""",
            *self._limit_schema(),
        ]

    def _limit_schema(self) -> list[str]:
        """The tables of the shared limits: rate slots, tokens (encrypted by the engine, see
        :class:`~docrelay._limits.TokenCache`) and token-fetch leases. Additive: created on
        opening a store of this schema version that lacks them."""
        r = self.real_type
        return [
            f"CREATE TABLE IF NOT EXISTS rate_buckets (bucket TEXT PRIMARY KEY,"
            f" next_slot {r} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS docrelay_tokens (credential TEXT PRIMARY KEY,"
            f" value TEXT NOT NULL, expires_at {r} NOT NULL, saved_at {r} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS token_fetches (credential TEXT PRIMARY KEY,"
            f" owner TEXT NOT NULL, until {r} NOT NULL)",
        ]

    def _migrations(self) -> dict[int, list[str]]:
        """Statements that bring schema version N-1 to N (N >= 2)."""
        return {}

    def _init_schema(self) -> None:
        with self._tx() as cur:
            tables = self._tables(cur)
            meta: dict[str, str] = {}
            if "docrelay_meta" in tables:
                cur.execute(self._sql("SELECT key, value FROM docrelay_meta"))
                meta = {k: v for k, v in cur.fetchall()}
            if not meta:
                if tables - {"docrelay_meta"}:
                    raise StoreError(
                        f"{self.url_safe}: not a docrelay store (it has other tables); "
                        "refusing to touch it"
                    )
                for stmt in self._schema():
                    cur.execute(stmt)
                cur.execute(
                    self._sql("INSERT INTO docrelay_meta (key, value) VALUES (?, ?), (?, ?)"),
                    ("app", APP_ID, "schema_version", str(SCHEMA_VERSION)),
                )
                return
            if meta.get("app") != APP_ID:
                raise StoreError(f"{self.url_safe}: not a docrelay store")
            version = int(meta.get("schema_version", "0"))
            if version > SCHEMA_VERSION:
                from .exceptions import SchemaTooNewError

                raise SchemaTooNewError(
                    f"{self.url_safe}: store schema version {version} is newer than this "
                    f"docrelay knows ({SCHEMA_VERSION}); upgrade docrelay"
                )
            migrations = self._migrations()
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in migrations.get(v, []):
                    cur.execute(stmt)
            if version < SCHEMA_VERSION:
                cur.execute(
                    self._sql("UPDATE docrelay_meta SET value = ? WHERE key = 'schema_version'"),
                    (str(SCHEMA_VERSION),),
                )
            for stmt in self._limit_schema():
                cur.execute(stmt)

    @abc.abstractmethod
    def _tables(self, cur: Any) -> set[str]:
        """Names of the tables in the database (or schema)."""

    @property
    def url_safe(self) -> str:
        return redact(self.url)

    # -- rows -----------------------------------------------------------------------------------
    def _row_to_record(self, row: Sequence[Any]) -> Record:
        d = dict(zip(_DOC_COLUMNS, row, strict=True))
        doc = Document(
            id=d["id"],
            provider=d["provider"],
            kind=d["kind"],
            content_type=d["content_type"],
            metadata=json.loads(d["metadata"]),
            payload=self._blob(d["payload"]),
        )
        return Record(
            document=doc,
            state=d["state"],
            key=d["key"],
            key_revision=d["key_revision"],
            previous_key=d["previous_key"],
            previous_state=d["previous_state"],
            attempts=d["attempts"],
            polls=d["polls"],
            failures=d["failures"],
            next_attempt_at=d["next_attempt_at"],
            lease_owner=d["lease_owner"],
            lease_until=d["lease_until"],
            outcome=_load_outcome(d["outcome"]),
            reason=d["reason"],
            provider_ref=d["provider_ref"],
            provider_state=json.loads(d["provider_state"] or "{}"),
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            first_attempt_at=d["first_attempt_at"],
        )

    _select = "SELECT " + ", ".join(_DOC_COLUMNS) + " FROM documents"

    def _get(self, cur: Any, doc_id: str) -> Record | None:
        cur.execute(self._sql(self._select + " WHERE id = ?"), (doc_id,))
        row = cur.fetchone()
        return None if row is None else self._row_to_record(row)

    def _insert_values(self, document: Document, now: float) -> tuple[Any, ...]:
        metadata = document.metadata
        return (
            document.id,
            document.provider,
            document.kind,
            document.content_type,
            json.dumps(dict(metadata)) if metadata else "{}",
            document.payload,
            document.revision,
            _QUEUED,
            now,
            now,
            now,
        )

    _insert_sql = (
        "INSERT INTO documents (id, provider, kind, content_type, metadata, payload, revision,"
        " state, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    # -- documents ------------------------------------------------------------------------------
    def submit(self, document: Document, now: float) -> tuple[Record, str]:
        with self._tx() as cur:
            existing = self._get(cur, document.id)
            if existing is None:
                cur.execute(self._sql(self._insert_sql), self._insert_values(document, now))
                rec = self._get(cur, document.id)
                assert rec is not None
                return rec, "new"
            refusal = submission_refusal(existing, document)
            if refusal is not None:
                raise DocumentError(refusal)
            if existing.document.revision == document.revision:
                return existing, "unchanged"
            cur.execute(
                self._sql(
                    "UPDATE documents SET kind = ?, content_type = ?, metadata = ?, payload = ?,"
                    " revision = ?, state = ?, previous_key = COALESCE(key, previous_key),"
                    " previous_state = ?, key = NULL, key_revision = NULL, attempts = 0,"
                    " polls = 0, next_attempt_at = ?, lease_owner = NULL, lease_until = NULL,"
                    " reason = ?, first_attempt_at = NULL, provider_state = ?, updated_at = ?"
                    " WHERE id = ?"
                ),
                (
                    document.kind,
                    document.content_type,
                    json.dumps(dict(document.metadata)),
                    document.payload,
                    document.revision,
                    DocState.QUEUED.value,
                    existing.state.value,
                    now,
                    f"new revision after {existing.state.value}",
                    json.dumps(dict(existing.provider_state)),
                    now,
                    document.id,
                ),
            )
            rec = self._get(cur, document.id)
            assert rec is not None
            return rec, "revision"

    def submit_many(self, documents: Sequence[Document], now: float) -> int:
        ids = [d.id for d in documents]
        seen: set[str] = set()
        for doc_id in ids:
            if doc_id in seen:
                raise DocumentError(f"document id {doc_id!r} is given twice")
            seen.add(doc_id)
        with self._tx() as cur:
            # All or nothing: an id already stored refuses the whole batch (nothing written).
            for chunk in iter_chunks(ids, 500):
                cur.execute(
                    self._sql(
                        "SELECT id FROM documents WHERE id IN (" + ", ".join("?" * len(chunk)) + ")"
                    ),
                    chunk,
                )
                row = cur.fetchone()
                if row is not None:
                    raise DocumentError(
                        f"document {row[0]!r} is already stored; submit_many stores new "
                        "documents only (submit a corrected revision with submit)"
                    )
            cur.executemany(
                self._sql(self._insert_sql), [self._insert_values(d, now) for d in documents]
            )
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
        where, params = [], []  # type: ignore[var-annotated]
        if ids is not None:
            if not ids:
                return []
            where.append("id IN (" + ", ".join("?" * len(ids)) + ")")
            params.extend(ids)
        if states:
            where.append("state IN (" + ", ".join("?" * len(states)) + ")")
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
            cur.execute(
                self._sql(self._select + " WHERE provider = ? AND key = ?"), (provider, key)
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    self._sql(self._select + " WHERE provider = ? AND previous_key = ?"),
                    (provider, key),
                )
                row = cur.fetchone()
            return None if row is None else self._row_to_record(row)

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

    # -- claiming -------------------------------------------------------------------------------
    #: Seconds between looks for leases of dead owners on this machine (0: never look).
    dead_owner_check: float = 10.0
    _dead_checked: float | None = None

    def claim(
        self, owner: str, now: float, lease: float, limit: int, provider: str | None = None
    ) -> list[Record]:
        paused = list(self.paused(now))
        self.recover_dead_owners(now)
        until = now + lease
        with self._tx() as cur:
            ids = self._claim_ids(cur, now, limit, provider, paused)
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            cur.execute(
                self._sql(
                    "UPDATE documents SET lease_owner = ?, lease_until = ?, next_attempt_at = ?"
                    f" WHERE id IN ({marks})"
                ),
                (owner, until, until, *ids),
            )
            cur.execute(self._sql(self._select + f" WHERE id IN ({marks})"), ids)
            records = {r.id: r for r in map(self._row_to_record, cur.fetchall())}
        return [records[i] for i in ids if i in records]

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
        dead = [o for o in owners if owner_is_dead(o)]
        total = 0
        for o in dead:
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

    def next_due(self, provider: str | None = None) -> float | None:
        paused = list(self.paused(time.time()))
        sql = "SELECT MIN(next_attempt_at) FROM documents WHERE next_attempt_at IS NOT NULL"
        params: list[Any] = []
        if provider:
            sql += " AND provider = ?"
            params.append(provider)
        if paused:
            sql += " AND provider NOT IN (" + ", ".join("?" * len(paused)) + ")"
            params.extend(paused)
        with self._tx(write=False) as cur:
            cur.execute(self._sql(sql), params)
            row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def update(
        self,
        doc_id: str,
        owner: str | None,
        changes: Mapping[str, Any],
        attempt: Attempt | None = None,
        now: float | None = None,
        expect_state: str | None = None,
    ) -> Record:
        rec = self._update(doc_id, owner, changes, attempt, now, expect_state, fetch=True)
        assert rec is not None
        return rec

    def write(
        self,
        doc_id: str,
        owner: str | None,
        changes: Mapping[str, Any],
        attempt: Attempt | None = None,
        now: float | None = None,
    ) -> None:
        self._update(doc_id, owner, changes, attempt, now, None, fetch=False)

    def _update(
        self,
        doc_id: str,
        owner: str | None,
        changes: Mapping[str, Any],
        attempt: Attempt | None,
        now: float | None,
        expect_state: str | None,
        fetch: bool,
    ) -> Record | None:
        bad = set(changes) - UPDATABLE
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        values = dict(changes)
        values["updated_at"] = now if now is not None else time.time()
        dumped: tuple[Any, str | None] | None = None
        for k in ("outcome",):
            if k in values and not (values[k] is None or isinstance(values[k], str)):
                dumped = (values[k], _dump_outcome(values[k]))
                values[k] = dumped[1]
        if "provider_state" in values and not isinstance(values["provider_state"], str):
            values["provider_state"] = json.dumps(redact_any(dict(values["provider_state"])))
        if values.get("reason"):
            values["reason"] = redact(values["reason"])
        if "state" in values:
            values["state"] = DocState(values["state"]).value
        cols = list(values)
        sql = "UPDATE documents SET " + ", ".join(f"{c} = ?" for c in cols) + " WHERE id = ?"
        params: list[Any] = [values[c] for c in cols] + [doc_id]
        if owner is not None:
            sql += " AND lease_owner = ?"
            params.append(owner)
        if expect_state is not None:
            sql += " AND state = ? AND (lease_until IS NULL OR lease_until < ?)"
            params.extend([expect_state, values["updated_at"]])
        with self._tx() as cur:
            cur.execute(self._sql(sql), params)
            if cur.rowcount == 0:
                if self._get(cur, doc_id) is None:
                    raise NotFoundError(f"no document {doc_id!r}")
                raise LeaseLost(f"lease on {doc_id!r} lost")
            if attempt is not None:
                # The attempt's outcome is usually the document's: dump it once.
                same = dumped is not None and dumped[0] is attempt.outcome
                self._put_attempt(cur, attempt, dumped[1] if same and dumped else None)
            return self._get(cur, doc_id) if fetch else None

    def _put_attempt(self, cur: Any, a: Attempt, outcome_json: str | None = None) -> None:
        cur.execute(
            self._sql("DELETE FROM attempts WHERE doc_id = ? AND number = ?"), (a.doc_id, a.number)
        )
        cur.execute(
            self._sql(
                "INSERT INTO attempts (doc_id, number, revision, key, action, started_at,"
                " request, status, outcome, duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                a.doc_id,
                a.number,
                a.revision,
                a.key,
                a.action,
                a.started_at,
                redact(a.request) if a.request else None,
                a.status,
                outcome_json if outcome_json is not None else _dump_outcome(a.outcome),
                a.duration,
            ),
        )

    def wake_held(self, provider: str, now: float) -> int:
        # Called after every delivery: look first (no write lock) and write only when the
        # provider has a held document to wake.
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT 1 FROM documents WHERE state = ? AND provider = ?"
                    " AND (lease_until IS NULL OR lease_until < ?) LIMIT 1"
                ),
                (DocState.HELD.value, provider, now),
            )
            if cur.fetchone() is None:
                return 0
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE documents SET next_attempt_at = ? WHERE provider = ? AND state = ?"
                    " AND (lease_until IS NULL OR lease_until < ?)"
                ),
                (now, provider, DocState.HELD.value, now),
            )
            return int(cur.rowcount)

    def extend_lease(self, doc_id: str, owner: str, until: float) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE documents SET lease_until = ?, next_attempt_at = ?"
                    " WHERE id = ? AND lease_owner = ?"
                ),
                (until, until, doc_id, owner),
            )
            if cur.rowcount == 0:
                raise LeaseLost(f"lease on {doc_id!r} lost")

    def requeue(self, doc_id: str, now: float) -> Record:
        with self._tx() as cur:
            rec = self._get(cur, doc_id)
            if rec is None:
                raise NotFoundError(f"no document {doc_id!r}")
            if rec.state in (DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION):
                raise DocumentError(
                    f"document {doc_id!r} is {rec.state.value}: it is never sent again"
                )
            if rec.lease_owner and rec.lease_until and rec.lease_until > now:
                raise DocumentError(f"document {doc_id!r} is being delivered right now")
            # An accepted document keeps waiting for its validation (polled again now).
            # Everything else starts a fresh round with the same key: for an ``unknown``
            # document that is the operator's decision to resend.
            state = rec.state if rec.state == DocState.ACCEPTED else None
            cur.execute(
                self._sql(
                    "UPDATE documents SET state = ?, attempts = 0, polls = 0,"
                    " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL,"
                    " reason = ?, first_attempt_at = NULL, updated_at = ? WHERE id = ?"
                ),
                ((state or DocState.QUEUED).value, now, "requeued by an operator", now, doc_id),
            )
            cur.execute(
                self._sql("DELETE FROM provider_pauses WHERE provider = ?"), (rec.provider,)
            )
            out = self._get(cur, doc_id)
        assert out is not None
        return out

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
        return [
            Attempt(
                doc_id=r[0],
                number=r[1],
                revision=r[2],
                key=r[3],
                action=r[4],
                started_at=r[5],
                request=r[6],
                status=r[7],
                outcome=_load_outcome(r[8]),
                duration=r[9],
            )
            for r in rows
        ]

    def next_attempt_number(self, doc_id: str) -> int:
        with self._tx(write=False) as cur:
            cur.execute(self._sql("SELECT MAX(number) FROM attempts WHERE doc_id = ?"), (doc_id,))
            row = cur.fetchone()
        return int(row[0] or 0) + 1

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
    ) -> bool:
        if doc_id is None and stored_body_limit is not None:
            body = body[:stored_body_limit]
        with self._tx() as cur:
            if doc_id is not None:
                # Dedup per round: the same answer after a resend is the new round's answer.
                digest = f"{digest}@{self._round(cur, doc_id)}"
            cur.execute(
                self._sql("SELECT id FROM notifications WHERE provider = ? AND digest = ?"),
                (provider, digest),
            )
            if cur.fetchone() is not None:
                return False
            cur.execute(
                self._sql(
                    "INSERT INTO notifications (provider, digest, doc_id, key, provider_ref,"
                    " outcome, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    provider,
                    digest,
                    doc_id,
                    key,
                    provider_ref,
                    _dump_outcome(outcome),
                    redact(body.decode("utf-8", "replace")).encode(),
                    now,
                ),
            )
            if doc_id is None and max_unmatched is not None:
                self._drop_unmatched(cur, provider, max_unmatched)
        return True

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
        cur.execute(
            self._sql(
                "INSERT INTO docrelay_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO"
                " UPDATE SET value = CAST(CAST(docrelay_meta.value AS INTEGER) + ? AS TEXT)"
            ),
            (f"notifications_dropped:{provider}", str(extra), extra),
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
        return [(int(i), o) for i, s in rows if (o := _load_outcome(s)) is not None]

    def mark_notification(self, note_id: int, applied: bool, note: str) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql("UPDATE notifications SET applied = ?, note = ? WHERE id = ?"),
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

    # -- providers ------------------------------------------------------------------------------
    def pause_provider(self, provider: str, reason: str, until: float | None, now: float) -> None:
        with self._tx() as cur:
            cur.execute(self._sql("DELETE FROM provider_pauses WHERE provider = ?"), (provider,))
            cur.execute(
                self._sql(
                    "INSERT INTO provider_pauses (provider, reason, since, until)"
                    " VALUES (?, ?, ?, ?)"
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
        with self._tx() as cur:
            cur.execute(self._sql("SELECT next_slot FROM rate_buckets WHERE bucket = ?"), (bucket,))
            row = cur.fetchone()
            slot = now if row is None else max(now, float(row[0]))
            cur.execute(
                self._sql(
                    "INSERT INTO rate_buckets (bucket, next_slot) VALUES (?, ?)"
                    " ON CONFLICT (bucket) DO UPDATE SET next_slot = excluded.next_slot"
                ),
                (bucket, slot + interval),
            )
        return slot

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
                        self._sql("DELETE FROM token_fetches WHERE credential = ?"), (credential,)
                    )
                    cur.execute(
                        self._sql(
                            "INSERT INTO token_fetches (credential, owner, until) VALUES (?, ?, ?)"
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


def open_store(url: str, **options: Any) -> Store:
    """Open the store named by *url*: ``sqlite:///path``, ``sqlite://:memory:`` is refused
    (it cannot survive a crash), ``postgresql://...`` needs the ``postgres`` extra."""
    if url.startswith("sqlite://"):
        from ._sqlite import SQLiteStore

        return SQLiteStore(url, **options)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                "the PostgreSQL store needs the postgres extra: pip install 'docrelay[postgres]'"
                f" ({exc})"
            ) from None
        return PostgresStore(url, **options)
    raise StoreError(
        f"unsupported store URL {redact(url)!r}: use sqlite:///PATH or postgresql://..."
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
