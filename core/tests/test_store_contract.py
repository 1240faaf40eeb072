"""The Store contract, run against every backend (SQLite and PostgreSQL) so they cannot drift.

The PostgreSQL half needs a real server: ``DOCRELAY_TEST_PG_URL=postgresql://...``. Without
it those tests are skipped with a plain reason (and the run's summary says so); with
``DOCRELAY_REQUIRE_PG=1`` (CI) a missing server fails them instead. Each PostgreSQL test
gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from docrelay import DocState, Document, Outcome, OutcomeKind
from docrelay._models import Attempt
from docrelay._store import SCHEMA_VERSION, LeaseLost, Store, Transition, open_store
from docrelay.exceptions import DocumentError, NotFoundError, SchemaTooNewError, StoreError

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
PG_SKIP_REASON = "PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set"


def require_pg() -> str:
    """The server URL, or skip (fail when DOCRELAY_REQUIRE_PG=1) without one."""
    if PG_URL:
        return PG_URL
    if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
        pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set", pytrace=False)
    pytest.skip(PG_SKIP_REASON)


class Backend:
    """One store location: opens stores on it and runs raw SQL beside docrelay."""

    name: str
    url: str
    options: dict[str, Any]

    def open(self, **options: Any) -> Store:
        return open_store(self.url, **{**self.options, **options})

    def raw(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def cleanup(self) -> None:
        return


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"
        self.url = f"sqlite:///{self.path}"
        self.options = {}

    def raw(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(sql.replace("%s", "?"), params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.schema = f"test_{uuid.uuid4().hex[:12]}"
        self.options = {"schema": self.schema, "heartbeat": False}
        self.raw(f"CREATE SCHEMA {self.schema}")

    def raw(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {self.schema}")
            cur = conn.execute(sql, params or None)
            return list(cur.fetchall()) if cur.description else []

    def cleanup(self) -> None:
        self.raw(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b: Backend = (
        SQLiteBackend(tmp_path) if request.param == "sqlite" else PostgresBackend(require_pg())
    )
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresBackend]:
    b = PostgresBackend(require_pg())
    try:
        yield b
    finally:
        b.cleanup()


T0 = 1_700_000_000.0


def doc(
    i: int | str = 1, provider: str = "acme", payload: bytes = b'{"n": 1}', **meta: str
) -> Document:
    return Document(
        id=f"doc-{i}", provider=provider, payload=payload, kind="document",
        content_type="application/json", metadata=meta,
    )  # fmt: skip


def attempt(doc_id: str, number: int, **kw: Any) -> Attempt:
    values: dict[str, Any] = {"revision": "r", "key": "k", "action": "send", "started_at": T0}
    values.update(kw)
    return Attempt(doc_id=doc_id, number=number, **values)


# -- submit ------------------------------------------------------------------------------------


def test_submit_new_unchanged_revision(store: Store) -> None:
    rec, how = store.submit(doc(1), T0)
    assert how == "new"
    assert rec.state == DocState.QUEUED
    assert rec.next_attempt_at == T0
    assert rec.created_at == T0
    assert rec.document.payload == b'{"n": 1}'
    assert rec.document.metadata == {}
    rec2, how = store.submit(doc(1), T0 + 1)
    assert how == "unchanged"
    assert rec2 == rec
    store.update("doc-1", None, {"state": "rejected", "key": "k1", "next_attempt_at": None})
    rec3, how = store.submit(doc(1, payload=b'{"n": 2}'), T0 + 2)
    assert how == "revision"
    assert rec3.state == DocState.QUEUED
    assert rec3.next_attempt_at == T0 + 2
    assert rec3.key is None
    assert rec3.previous_key == "k1"
    assert rec3.previous_state == "rejected"
    assert rec3.document.payload == b'{"n": 2}'


def test_a_stored_document_carries_its_revision_unhashed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revision is computed once, when the document is stored: a record read back (get,
    select, claim) carries the stored revision and hashes nothing."""
    from docrelay import _models

    submitted = doc(1)
    want = submitted.revision
    store.submit(submitted, T0)
    hashed: list[bytes] = []
    real = _models.hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        hashed.append(data)
        return real(data)

    monkeypatch.setattr(_models.hashlib, "sha256", counting)
    got = store.get("doc-1")
    assert got is not None
    [selected] = store.select(ids=["doc-1"])
    [claimed] = store.claim("w", T0 + 1, 30, 10)
    assert [r.document.revision for r in (got, selected, claimed)] == [want] * 3
    assert hashed == []


def test_sqlite_keeps_payloads_apart_and_a_state_change_leaves_them_unwritten(
    tmp_path: Path,
) -> None:
    """On SQLite a payload is stored once, in its own table: the state changes of a round
    (intent, outcome) rewrite a row without it; a corrected revision replaces it."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    big = b"<Invoice>" + b"x" * 5000 + b"</Invoice>"
    store.submit(doc(1, payload=big), T0)
    store.submit_many([doc(2, payload=big + b" ")], T0)
    [rec] = store.claim("w", T0 + 1, 30, 1)
    store.apply(rec.id, "w", Transition(state=DocState.SENDING, release=False), T0 + 2)
    store.apply(rec.id, "w", Transition(state=DocState.DELIVERED, next_at=None), T0 + 3)
    conn = sqlite3.connect(tmp_path / "s.db")
    rows = conn.execute("SELECT id, length(row_payload) FROM documents ORDER BY id").fetchall()
    kept = conn.execute("SELECT id, length(payload) FROM payloads ORDER BY id").fetchall()
    conn.close()
    assert rows == [("doc-1", 0), ("doc-2", 0)]
    assert kept == [("doc-1", len(big)), ("doc-2", len(big) + 1)]
    got = {r.id: r.document.payload for r in store.select()}
    assert got == {"doc-1": big, "doc-2": big + b" "}
    store.update("doc-1", None, {"state": "rejected", "next_attempt_at": None})
    _, how = store.submit(doc(1, payload=b"fixed"), T0 + 4)
    assert (how, store.get("doc-1").document.payload) == ("revision", b"fixed")  # type: ignore[union-attr]
    store.close()


def test_a_payload_counts_only_for_its_revision(tmp_path: Path) -> None:
    """A writer that keeps the payload in the row (the outbox, an older docrelay) changing the
    revision makes the row's payload the one read, not a payload kept for an older revision;
    a store of schema version 1 is upgraded in place and its rows keep their payloads."""
    path = tmp_path / "s.db"
    store = open_store(f"sqlite:///{path}")
    store.submit(doc(1, payload=b"first"), T0)
    store.update("doc-1", None, {"state": "rejected", "next_attempt_at": None})
    newer = doc(1, payload=b"second")
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE documents SET row_payload = ?, revision = ? WHERE id = 'doc-1'",
        (newer.payload, newer.revision),
    )
    conn.commit()
    conn.close()
    assert store.get("doc-1").document.payload == b"second"  # type: ignore[union-attr]
    store.close()

    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old)
    from docrelay._store import schema

    for stmt in schema.tables("BLOB", "REAL", "INTEGER PRIMARY KEY AUTOINCREMENT"):
        if "payloads" not in stmt:
            conn.execute(stmt)
    conn.execute("INSERT INTO docrelay_meta VALUES ('app', 'docrelay'), ('schema_version', '1')")
    d = doc(7, payload=b"kept in the row")
    conn.execute(
        "INSERT INTO documents (id, provider, kind, content_type, metadata, payload, revision,"
        " state, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?,"
        " 'queued', ?, ?, ?)",
        (d.id, d.provider, d.kind, d.content_type, d.payload, d.revision, T0, T0, T0),
    )
    conn.commit()
    conn.close()
    upgraded = open_store(f"sqlite:///{old}")
    assert upgraded.get("doc-7").document.payload == b"kept in the row"  # type: ignore[union-attr]
    [claimed] = upgraded.claim("w", T0 + 1, 30, 5)
    assert claimed.document.payload == b"kept in the row"
    upgraded.close()
    conn = sqlite3.connect(old)
    version = conn.execute(
        "SELECT value FROM docrelay_meta WHERE key = 'schema_version'"
    ).fetchall()
    conn.close()
    assert version == [(str(SCHEMA_VERSION),)]


def test_submit_refused_after_delivered_or_in_flight(store: Store) -> None:
    store.submit(doc(1), T0)
    store.update("doc-1", None, {"state": "delivered", "next_attempt_at": None})
    with pytest.raises(DocumentError, match="already delivered"):
        store.submit(doc(1, payload=b"changed"), T0 + 1)
    store.submit(doc(2), T0)
    store.update("doc-2", None, {"state": "sending"})
    with pytest.raises(DocumentError, match="sending"):
        store.submit(doc(2, payload=b"changed"), T0 + 1)
    with pytest.raises(DocumentError, match="already stored for provider"):
        store.submit(doc(2, provider="other"), T0 + 1)


def test_submit_many_get_select_find_counts(store: Store) -> None:
    assert store.submit_many([doc(i, erp="x" if i % 2 else "y") for i in range(10)], T0) == 10
    assert store.get("doc-3") is not None
    assert store.get("nope") is None
    assert [r.id for r in store.select(ids=["doc-1", "doc-2", "zz"])] == ["doc-1", "doc-2"]
    assert store.select(ids=[]) == []
    assert len(store.select(states=["queued"], provider="acme", limit=4)) == 4
    assert {r.id for r in store.find("acme", "document", {"erp": "x"})} == {
        f"doc-{i}" for i in range(1, 10, 2)
    }
    assert store.counts() == {"queued": 10}
    store.update("doc-1", None, {"key": "K1", "provider_ref": "REF1"})
    assert store.find_by_key("acme", "K1").id == "doc-1"  # type: ignore[union-attr]
    assert store.find_by_ref("acme", "REF1").id == "doc-1"  # type: ignore[union-attr]
    assert store.find_by_key("other", "K1") is None


# -- claiming and leases -----------------------------------------------------------------------


def test_claim_respects_next_attempt_at_and_leases(store: Store) -> None:
    store.submit(doc(1), T0)
    store.submit(doc(2), T0)
    store.update("doc-2", None, {"next_attempt_at": T0 + 100})
    assert store.next_due() == T0
    got = store.claim("w1", T0 + 1, 30.0, 10)
    assert [r.id for r in got] == ["doc-1"]
    r = got[0]
    assert r.lease_owner == "w1"
    assert r.lease_until == T0 + 31
    assert r.next_attempt_at == T0 + 31
    # Leased: nobody else gets it, not even the same owner, until the lease ends.
    assert store.claim("w2", T0 + 2, 30.0, 10) == []
    assert store.next_due() == T0 + 31
    assert [r.id for r in store.claim("w2", T0 + 100, 30.0, 10)] == ["doc-1", "doc-2"]


def test_claim_limit_order_and_provider_filter(store: Store) -> None:
    for i in range(5):
        store.submit(doc(i, provider="acme" if i < 3 else "other"), T0 + i)
    assert [r.id for r in store.claim("w", T0 + 10, 30.0, 2)] == ["doc-0", "doc-1"]
    assert [r.id for r in store.claim("w", T0 + 10, 30.0, 10, provider="other")] == [
        "doc-3", "doc-4"
    ]  # fmt: skip
    assert store.next_due(provider="acme") == T0 + 2


def test_final_documents_are_never_claimed(store: Store) -> None:
    store.submit(doc(1), T0)
    store.update("doc-1", None, {"state": "delivered", "next_attempt_at": None})
    assert store.claim("w", T0 + 1e6, 30.0, 10) == []
    assert store.next_due() is None


def test_paused_providers_are_not_claimed(store: Store) -> None:
    store.submit(doc(1, provider="acme"), T0)
    store.submit(doc(2, provider="other"), T0)
    store.pause_provider("acme", "config error: 403", None, T0)
    assert store.paused(T0 + 1) == {"acme": ("config error: 403", None)}
    assert [r.id for r in store.claim("w", T0 + 1, 10.0, 10)] == ["doc-2"]
    assert store.next_due() == T0 + 11  # doc-1 is due, but its provider is paused
    store.pause_provider("acme", "config error: 401", T0 + 50, T0)  # a second pause replaces
    assert store.paused(T0 + 1) == {"acme": ("config error: 401", T0 + 50)}
    assert store.claim("w", T0 + 20, 10.0, 10, provider="acme") == []
    assert store.paused(T0 + 51) == {}
    assert [r.id for r in store.claim("w", T0 + 51, 10.0, 10, provider="acme")] == ["doc-1"]
    store.pause_provider("other", "403", None, T0)
    assert set(store.paused(T0 + 1e6)) == {"other"}
    store.resume_provider("other")
    assert store.paused(T0 + 1e6) == {}


def test_expired_lease_is_recovered(store: Store) -> None:
    store.submit(doc(1), T0)
    (_r,) = store.claim("w1", T0, 10.0, 1)
    store.update("doc-1", "w1", {"state": "sending", "key": "K"})
    assert store.claim("w2", T0 + 5, 10.0, 1) == []
    (r2,) = store.claim("w2", T0 + 11, 10.0, 1)  # w1 died: its lease expired
    assert r2.lease_owner == "w2"
    assert r2.state == DocState.SENDING
    assert r2.key == "K"
    with pytest.raises(LeaseLost):
        store.update("doc-1", "w1", {"state": "delivered"})
    with pytest.raises(LeaseLost):
        store.extend_lease("doc-1", "w1", T0 + 100)
    store.extend_lease("doc-1", "w2", T0 + 100)
    assert store.get("doc-1").lease_until == T0 + 100  # type: ignore[union-attr]
    done = store.update("doc-1", "w2", {"state": "delivered", "lease_owner": None,
                                       "lease_until": None, "next_attempt_at": None})  # fmt: skip
    assert done.state == DocState.DELIVERED
    assert done.lease_owner is None


def test_update_rules(store: Store) -> None:
    store.submit(doc(1), T0)
    with pytest.raises(NotFoundError):
        store.update("nope", None, {"reason": "x"})
    with pytest.raises(NotFoundError):
        store.update("nope", "w", {"reason": "x"})
    with pytest.raises(ValueError, match="cannot update"):
        store.update("doc-1", None, {"id": "other"})
    with pytest.raises(LeaseLost):
        store.update("doc-1", "w-not-owner", {"reason": "x"})
    out = Outcome(kind=OutcomeKind.RETRY, status=503, message="busy")
    rec = store.update("doc-1", None, {"outcome": out, "provider_state": {"etag": "E1"},
                                       "reason": "r"}, now=T0 + 5)  # fmt: skip
    assert rec.outcome is not None
    assert rec.outcome.status == 503
    assert rec.provider_state == {"etag": "E1"}
    assert rec.updated_at == T0 + 5


def test_expect_state(store: Store) -> None:
    store.submit(doc(1), T0)
    store.update("doc-1", None, {"state": "accepted"})
    delivered = Transition(state=DocState.DELIVERED, release=False)
    with pytest.raises(LeaseLost):
        store.apply("doc-1", None, delivered, T0, expect_state="queued")
    (_r,) = store.claim("w", T0, 30.0, 1)
    with pytest.raises(LeaseLost):  # leased: the worker will apply it
        store.apply("doc-1", None, delivered, T0 + 1, expect_state="accepted")
    store.apply("doc-1", None, delivered, T0 + 31, expect_state="accepted")
    rec = store.get("doc-1")
    assert rec is not None
    assert rec.state == DocState.DELIVERED


def test_wake_held(store: Store) -> None:
    store.submit(doc(1), T0)
    store.submit(doc(2), T0)
    store.update("doc-1", None, {"state": "held", "next_attempt_at": T0 + 60})
    store.update("doc-2", None, {"state": "held", "next_attempt_at": T0 + 60})
    store.claim("w", T0 + 61, 30.0, 1)  # doc-1 leased: left alone
    assert store.wake_held("acme", T0 + 62) == 1
    assert store.get("doc-2").next_attempt_at == T0 + 62  # type: ignore[union-attr]


def _claim_all(
    store: Store, owner: str, now: float, out: list[str], start: threading.Barrier | None = None
) -> None:
    if start is not None:
        start.wait()  # all claimers begin together (a fast store let the first take all)
    while batch := store.claim(owner, now, 300.0, 3):
        out.extend(r.id for r in batch)


def test_concurrent_claims_by_threads_never_overlap(backend: Backend) -> None:
    s = backend.open()
    try:
        s.submit_many([doc(i) for i in range(300)], T0)
        results: list[list[str]] = [[] for _ in range(6)]
        start = threading.Barrier(6)
        threads = [
            threading.Thread(target=_claim_all, args=(s, f"w{i}", T0 + 1, results[i], start))
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        s.close()
    claimed = [i for r in results for i in r]
    assert len(claimed) == 300
    assert len(set(claimed)) == 300
    assert sum(1 for r in results if r) >= 2  # they really ran side by side


_CLAIMER = """
import json, sys
from docrelay._store import open_store
url, options, owner, now = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4])
store = open_store(url, **options)
ids = []
while batch := store.claim(owner, now, 300.0, 2):
    ids.extend(r.id for r in batch)
store.close()
print(json.dumps(ids))
"""


def test_concurrent_claims_by_processes_never_overlap(backend: Backend) -> None:
    s = backend.open()
    s.submit_many([doc(i) for i in range(200)], T0)
    s.close()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLAIMER,
                backend.url,
                json.dumps(backend.options),
                f"p{i}",
                str(T0 + 1),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    claimed: list[str] = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        claimed.extend(json.loads(out))
    assert len(claimed) == 200
    assert len(set(claimed)) == 200


# -- history and notifications -----------------------------------------------------------------


def test_history_and_attempt_numbers(store: Store) -> None:
    store.submit(doc(1), T0)
    assert store.next_attempt_number("doc-1") == 1
    assert store.history("doc-1") == []
    store.apply("doc-1", None, Transition(state=DocState.SENDING, attempt=attempt("doc-1", 1)), T0)
    done = attempt("doc-1", 1, status=200, duration=0.5,
                   outcome=Outcome(kind=OutcomeKind.DELIVERED, status=200))  # fmt: skip
    store.apply("doc-1", None, Transition(state=DocState.DELIVERED, attempt=done), T0)  # replaces 1
    poll = attempt("doc-1", 2, action="poll", started_at=T0 + 1)
    store.apply("doc-1", None, Transition(attempt=poll), T0 + 1)
    hist = store.history("doc-1")
    assert [(a.number, a.action, a.status) for a in hist] == [(1, "send", 200), (2, "poll", None)]
    assert hist[0].outcome is not None
    assert hist[0].outcome.kind == OutcomeKind.DELIVERED
    assert hist[0].duration == 0.5
    assert hist[1].started_at == T0 + 1
    assert store.next_attempt_number("doc-1") == 3


def test_notifications_dedupe_by_digest(store: Store) -> None:
    store.submit(doc(1), T0)
    ok = Outcome(kind=OutcomeKind.DELIVERED, message="validated")
    assert store.record_notification("acme", "d1", "doc-1", "K", None, ok, b'{"a": 1}', T0)
    assert not store.record_notification("acme", "d1", "doc-1", "K", None, ok, b'{"a": 1}', T0)
    assert store.record_notification("other", "d1", None, None, None, None, b"x", T0)
    pending = store.pending_notifications("acme", "doc-1")
    assert [o.kind for _, o in pending] == [OutcomeKind.DELIVERED]
    store.mark_notification(pending[0][0], True, "applied")
    assert store.pending_notifications("acme", "doc-1") == []
    notes = store.notifications("doc-1")
    assert len(notes) == 1
    assert notes[0]["applied"] == 1
    assert notes[0]["note"] == "applied"
    assert notes[0]["outcome"]["kind"] == "delivered"
    assert len(store.notifications()) == 2


def test_settled_notifications_of_a_document_are_capped_waiting_ones_never(
    store: Store,
) -> None:
    """Beyond *max_per_document* settled notifications of one document, the oldest not
    applicable ones go first, then the oldest applied; one still waiting stays; all are
    counted as dropped."""
    store.submit(doc(1), T0)
    ok = Outcome(kind=OutcomeKind.DELIVERED, message="validated")

    def note(i: int) -> None:
        store.record_notification(
            "acme", f"d{i}", "doc-1", "K", None, ok, b"{}", T0 + i, max_per_document=2
        )

    note(0)
    store.mark_notification(store.pending_notifications("acme", "doc-1")[0][0], True, "applied")
    note(1)  # waits (never marked)
    for i in range(2, 6):
        note(i)
        latest = store.pending_notifications("acme", "doc-1")[-1][0]
        store.mark_notification(latest, False, "already delivered")
    kept = store.notifications("doc-1")
    # the applied one, the waiting one, and the newest not applicable ones within the cap
    assert [(n["applied"], n["note"]) for n in kept] == [
        (1, "applied"),
        (0, None),
        (2, "already delivered"),
        (2, "already delivered"),
    ]
    assert store.notification_stats()["acme"]["dropped"] == 2


# -- requeue -----------------------------------------------------------------------------------


def test_requeue_rules(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.requeue("nope", T0)
    for i, state in enumerate(["delivered", "duplicate", "no_action"]):
        store.submit(doc(i), T0)
        store.update(f"doc-{i}", None, {"state": state, "next_attempt_at": None})
        with pytest.raises(DocumentError, match="never sent again"):
            store.requeue(f"doc-{i}", T0)
    store.submit(doc(10), T0)
    store.claim("w", T0, 30.0, 10)
    with pytest.raises(DocumentError, match="being delivered"):
        store.requeue("doc-10", T0 + 1)
    store.update("doc-10", "w", {"state": "failed", "attempts": 8, "next_attempt_at": None,
                                 "lease_owner": None, "lease_until": None})  # fmt: skip
    store.pause_provider("acme", "403", None, T0)
    rec = store.requeue("doc-10", T0 + 2)
    assert rec.state == DocState.QUEUED
    assert rec.attempts == 0
    assert rec.next_attempt_at == T0 + 2
    assert rec.reason == "requeued by an operator"
    assert store.paused(T0 + 3) == {}
    store.submit(doc(11), T0)
    store.update("doc-11", None, {"state": "accepted", "next_attempt_at": None})
    assert store.requeue("doc-11", T0 + 2).state == DocState.ACCEPTED


# -- schema ------------------------------------------------------------------------------------


def test_reopen_keeps_data(backend: Backend) -> None:
    s = backend.open()
    s.submit(doc(1), T0)
    s.close()
    s = backend.open()
    try:
        assert s.get("doc-1") is not None
    finally:
        s.close()
    meta = dict(backend.raw("SELECT key, value FROM docrelay_meta"))
    assert meta == {"app": "docrelay", "schema_version": str(SCHEMA_VERSION)}


def test_newer_schema_is_refused_and_left_alone(backend: Backend) -> None:
    s = backend.open()
    s.submit(doc(1), T0)
    s.close()
    backend.raw("UPDATE docrelay_meta SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION + 1),))  # fmt: skip
    before = backend.raw("SELECT id, state, updated_at FROM documents")
    with pytest.raises(SchemaTooNewError, match="newer than this docrelay knows"):
        backend.open()
    assert backend.raw("SELECT value FROM docrelay_meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION + 1),)
    ]
    assert backend.raw("SELECT id, state, updated_at FROM documents") == before


def test_foreign_sqlite_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError) as exc:
        open_store(f"sqlite:///{junk}")
    assert "\n" not in str(exc.value)
    assert junk.read_bytes() == b"this is not a database, just some text " * 100
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a docrelay store"):
        open_store(f"sqlite:///{other}")
    conn = sqlite3.connect(other)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"customers"}


@pytest.mark.postgres
def test_foreign_postgres_schema_is_refused(pg: PostgresBackend) -> None:
    pg.raw("CREATE TABLE customers (id SERIAL PRIMARY KEY, name TEXT)")
    with pytest.raises(StoreError, match="not a docrelay store"):
        pg.open()
    tables = pg.raw(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        (pg.schema,),
    )
    assert tables == [("customers",)]


@pytest.mark.postgres
def test_concurrent_first_initialisation(pg: PostgresBackend) -> None:
    errors: list[BaseException] = []
    stores: list[Store] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            s = pg.open()
            with lock:
                stores.append(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    assert len(stores) == 6
    assert pg.raw("SELECT COUNT(*) FROM docrelay_meta") == [(2,)]


def test_bad_postgres_urls_give_one_line_without_password() -> None:
    for url in (
        "postgresql://docrelay:Sup3rSecretPw@127.0.0.1:1/docrelay",
        "postgresql://docrelay:Sup3rSecretPw@127.0.0.1:notaport/docrelay",
        "postgres://docrelay@127.0.0.1:1/docrelay?password=Sup3rSecretPw",
    ):
        with pytest.raises(StoreError) as exc:
            open_store(url, connect_timeout=2)
        text = str(exc.value)
        assert "Sup3rSecretPw" not in text
        assert "\n" not in text
        assert text
    with pytest.raises(StoreError, match="invalid PostgreSQL schema"):
        open_store("postgresql://u:p@127.0.0.1:1/db", schema="x; DROP TABLE y")


@pytest.mark.postgres
def test_wrong_postgres_password_is_a_store_error() -> None:
    parts = urlsplit(require_pg())
    url = (
        f"postgresql://{parts.username}:WrongPassw0rd@{parts.hostname}:{parts.port or 5432}"
        f"{parts.path}"
    )
    with pytest.raises(StoreError) as exc:
        open_store(url)
    assert "WrongPassw0rd" not in str(exc.value)
    assert "\n" not in str(exc.value)


# -- shared limits -----------------------------------------------------------------------------


def test_rate_slots_are_distinct_and_spaced_across_stores(backend: Backend) -> None:
    """Slots are shared by every store on one database: SQLite too (several processes on
    one file), not only PostgreSQL."""
    stores = [backend.open() for _ in range(3)]
    slots: list[float] = []
    lock = threading.Lock()
    interval = 0.05
    now = time.time()

    def take(s: Store) -> None:
        for _ in range(15):
            slot = s.rate_slot("acme:cred", interval, now)
            assert slot is not None
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=take, args=(stores[i % 3],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    assert len(slots) == 90
    assert slots[0] == pytest.approx(now)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) == pytest.approx(interval)
    assert max(gaps) == pytest.approx(interval)
    # Another bucket is independent; an idle bucket starts again from now.
    assert stores[0].rate_slot("other", interval, now) == pytest.approx(now)
    later = now + 100
    assert stores[1].rate_slot("acme:cred", interval, later) == pytest.approx(later)
    for s in stores:
        s.close()


def test_tokens_are_shared(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    try:
        now = time.time()
        assert a.shared_token("acme:cred", now) is None
        a.save_token("acme:cred", "tok-123456", now + 60)
        assert b.shared_token("acme:cred", now) == ("tok-123456", now + 60)
        assert b.shared_token("acme:cred", now + 61) is None  # expired
        b.save_token("acme:cred", "tok-abcdef", now + 120)  # a refresh replaces it
        b.drop_token("acme:cred", "tok-123456")  # an old value: kept
        assert a.shared_token("acme:cred", now) == ("tok-abcdef", now + 120)
        a.drop_token("acme:cred", "tok-abcdef")
        assert b.shared_token("acme:cred", now) is None
    finally:
        a.close()
        b.close()


def test_token_lock_serialises_across_stores(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    inside = 0
    peak = 0
    order: list[int] = []
    guard = threading.Lock()

    def refresh(i: int) -> None:
        nonlocal inside, peak
        lock = stores[i].token_lock("acme:cred")
        assert lock is not None
        with lock:
            with guard:
                inside += 1
                peak = max(peak, inside)
                order.append(i)
            time.sleep(0.05)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=refresh, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1
    assert sorted(order) == [0, 1, 2, 3]
    # Another credential is not blocked by a held lock.
    lock_a, lock_b = stores[0].token_lock("a"), stores[1].token_lock("b")
    assert lock_a is not None
    assert lock_b is not None
    with lock_a, lock_b:
        pass
    for s in stores:
        s.close()


def test_token_lock_holds_no_transaction_open(backend: Backend) -> None:
    """While one worker fetches a token (lock held), the others keep writing: on SQLite
    the write lock is not held for the fetch."""
    a, b = backend.open(), backend.open(**({"lock_timeout": 1.0}))
    try:
        lock = a.token_lock("acme:cred")
        assert lock is not None
        with lock:
            b.submit(doc(1), time.time())
            assert b.rate_slot("x", 1.0, time.time()) is not None
        assert b.get("doc-1") is not None
    finally:
        a.close()
        b.close()


# -- dead owners -------------------------------------------------------------------------------

DEAD_CHILD = "import os; print(os.getpid(), flush=True)"


def _gone_pid() -> int:
    """The pid of a process that ran and was reaped."""
    out = subprocess.run([sys.executable, "-c", DEAD_CHILD], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return int(out.stdout)


def _owner(pid: int, start: str | None = None) -> str:
    from docrelay._store import process_identity

    host, _pid, tag = process_identity().split(":")
    assert tag != "p?", "this test needs /proc"
    if start is not None:
        tag = tag.rpartition(".")[0] + "." + start
    return f"{host}:{pid}:{tag}:abc123:1"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_leases_of_dead_owners_are_taken_over_at_once(backend: Backend) -> None:
    """Leases of a gone process (or a reused PID) on this machine are claimable at once;
    those of a live process, of another host and of an unknown owner form are kept."""
    from docrelay._store import owner_is_dead, process_identity

    s = backend.open()
    try:
        now = time.time()
        s.submit_many([doc(i) for i in range(6)], now)
        me = f"{process_identity()}:abc123:1"
        host, pid, tag = process_identity().split(":")
        gone = _owner(_gone_pid())
        reused = _owner(os.getpid(), start="1")  # this pid, another start time
        owners = {
            "doc-0": me,
            "doc-1": gone,
            "doc-2": reused,
            "doc-3": f"other-host.example:{pid}:{tag}:abc123:1",
            "doc-4": "w-legacy:123:abc123",
            "doc-5": f"{host}:{pid}:p?:abc123:1",
        }
        for doc_id, owner in owners.items():
            claimed = s.claim(owner, now, 3600.0, 1)
            assert [r.id for r in claimed] == [doc_id]
        assert [owner_is_dead(o) for o in owners.values()] == [
            False, True, True, False, False, False
        ]  # fmt: skip
        assert s.recover_dead_owners(now + 1, force=True) == 2
        got = s.claim("w-new", now + 2, 60.0, 10)
        assert sorted(r.id for r in got) == ["doc-1", "doc-2"]
        for r in s.select(ids=["doc-0", "doc-3", "doc-4", "doc-5"]):
            assert r.lease_owner == owners[r.id]
            assert r.lease_until == pytest.approx(now + 3600.0)
    finally:
        s.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_first_claim_of_a_process_takes_over_dead_leases(backend: Backend) -> None:
    s = backend.open()
    try:
        now = time.time()
        s.submit_many([doc(1)], now)
        assert len(s.claim(_owner(_gone_pid()), now, 3600.0, 1)) == 1
    finally:
        s.close()
    fresh = backend.open()
    try:
        assert [r.id for r in fresh.claim("w-new", now + 1, 60.0, 5)] == ["doc-1"]
    finally:
        fresh.close()
    # dead_owner_check = 0: the lease of a dead owner runs its course.
    fresh = backend.open()
    try:
        fresh.submit_many([doc(2)], now)
        assert [r.id for r in fresh.claim(_owner(_gone_pid()), now, 3600.0, 5)] == ["doc-2"]
    finally:
        fresh.close()
    off = backend.open(dead_owner_check=0)
    try:
        assert off.claim("w-patient", now + 2, 60.0, 5) == []
    finally:
        off.close()


def test_sqlite_token_fetch_lease_of_a_dead_worker_is_taken_over(tmp_path: Path) -> None:
    """A worker killed during its token fetch leaves a fetch lease; on this machine the next
    worker sees its process is gone and fetches at once instead of waiting it out."""
    s = open_store(f"sqlite:///{tmp_path / 'x.db'}", lock_timeout=2.0)
    try:
        with s._tx() as cur:  # type: ignore[attr-defined]
            cur.execute(
                "INSERT INTO token_fetches (credential, owner, until) VALUES (?, ?, ?)",
                ("acme:cred", _owner(_gone_pid()), time.time() + 3600),
            )
        lock = s.token_lock("acme:cred")
        assert lock is not None
        with lock:
            pass
        with s._tx() as cur:  # type: ignore[attr-defined]
            cur.execute(
                "INSERT INTO token_fetches (credential, owner, until) VALUES (?, ?, ?)",
                ("acme:cred", "other-host:1:p0.0.1:abc:1", time.time() + 3600),
            )
        lock = s.token_lock("acme:cred")
        assert lock is not None
        with pytest.raises(StoreError, match="did not finish"), lock:
            pass
    finally:
        s.close()


def test_lease_keeper_keeps_live_leases_only(backend: Backend) -> None:
    """The one lease keeper (both backends): extends held leases in one statement per owner,
    never a released one; once the worker stops (a dead worker), the lease expires."""
    from docrelay._leases import LeaseKeeper

    s = backend.open(heartbeat=0.1) if isinstance(backend, PostgresBackend) else backend.open()
    try:
        now = time.time()
        s.submit_many([doc(1), doc(2)], now)
        claimed = s.claim("w-alive", now, 0.6, 2)
        assert len(claimed) == 2
        first_until = claimed[0].lease_until
        assert first_until is not None
        keeper = LeaseKeeper(s, 0.6)
        keeper.hold("w-alive", ["doc-1", "doc-2"])
        # doc-2 finishes: its lease is released and must not be extended.
        s.apply("doc-2", "w-alive", Transition(state=DocState.DELIVERED, next_at=None), now)
        time.sleep(1.2)
        r1, r2 = s.get("doc-1"), s.get("doc-2")
        assert r1 is not None
        assert r2 is not None
        assert r1.lease_owner == "w-alive"
        assert r1.lease_until is not None
        assert r1.lease_until > first_until + 0.3
        assert r1.lease_until > time.time()
        assert r1.next_attempt_at == r1.lease_until
        assert r2.lease_until is None
        assert r2.next_attempt_at is None
        assert not keeper.holds("doc-2")
        with pytest.raises(LeaseLost):
            keeper.renew("doc-2", "w-alive")
        keeper.release("doc-1")
    finally:
        s.close()
    # A worker that stopped no longer extends: the lease expires and is recovered.
    time.sleep(0.8)
    other = backend.open()
    try:
        got = other.claim("w-other", time.time(), 30.0, 5)
        assert [r.id for r in got] == ["doc-1"]
    finally:
        other.close()


def test_apply_many_is_one_transaction_and_reports_lost_leases(store: Store) -> None:
    """Group commit groundwork: the intents of a claimed batch in one transaction; a change
    whose lease is gone is not applied and is reported, the others are."""
    store.submit_many([doc(1), doc(2), doc(3)], T0)
    claimed = store.claim("w1", T0, 30.0, 2)
    assert [r.id for r in claimed] == ["doc-1", "doc-2"]
    intent = Transition(state=DocState.SENDING, key="K", reason="in flight", release=False)

    def with_attempt(i: int) -> Transition:
        return attrs.evolve(intent, attempt=attempt(f"doc-{i}", 1, key="K"))

    lost = store.apply_many([(f"doc-{i}", "w1", with_attempt(i)) for i in (1, 2, 3)], T0 + 1)
    assert lost == ["doc-3"]
    # the attempts of the changes applied are stored (in one statement), not the lost one's
    assert [[a.number for a in store.history(f"doc-{i}")] for i in (1, 2, 3)] == [[1], [1], []]
    got = {r.id: r for r in store.select()}
    assert [got[i].state for i in ("doc-1", "doc-2", "doc-3")] == [
        DocState.SENDING,
        DocState.SENDING,
        DocState.QUEUED,
    ]
    assert got["doc-1"].lease_owner == "w1"  # release=False keeps the lease
    assert got["doc-1"].key == "K"
    assert store.apply_many([], T0) == []


def test_transition_applied_matches_the_stored_record(store: Store) -> None:
    """:meth:`Transition.applied` is what the store holds after :meth:`Store.apply` (the
    engine does not read the record back)."""
    store.submit(doc(1), T0)
    (rec,) = store.claim("w", T0, 30.0, 1)
    t = Transition(
        state=DocState.RETRY_WAIT,
        reason="later",
        next_at=T0 + 60,
        outcome=Outcome(kind=OutcomeKind.RETRY, status=503),
        attempts=1,
        provider_state={"etag": "E"},
        first_attempt_at=T0,
    )
    store.apply("doc-1", "w", t, T0 + 1)
    assert store.get("doc-1") == t.applied(rec, T0 + 1)


def test_requeue_rules_live_in_the_lifecycle(store: Store) -> None:
    from docrelay import _lifecycle

    store.submit(doc(1), T0)
    store.update("doc-1", None, {"state": "failed", "next_attempt_at": None, "attempts": 3})
    rec = store.get("doc-1")
    assert rec is not None
    t = _lifecycle.requeue(rec, "doc-1", T0 + 5)
    assert t.state == DocState.QUEUED
    assert t.attempts == 0
    assert store.requeue("doc-1", T0 + 5) == t.applied(rec, T0 + 5)
    store.update("doc-1", None, {"state": "delivered"})
    with pytest.raises(DocumentError):
        _lifecycle.requeue(store.get("doc-1"), "doc-1", T0 + 6)


@pytest.mark.postgres
def test_concurrent_submit_and_notifications_do_not_error(pg: PostgresBackend) -> None:
    stores = [pg.open() for _ in range(4)]
    results: list[Any] = []
    guard = threading.Lock()

    def work(i: int) -> None:
        s = stores[i]
        r = s.submit(doc("same"), T0)[1]
        n = s.record_notification("acme", "dig", None, None, None, None, b"{}", T0)
        s.pause_provider("acme", f"403 from {i}", None, T0)
        with guard:
            results.append((r, n))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r for r, _ in results) == ["new", "unchanged", "unchanged", "unchanged"]
    assert sorted(n for _, n in results) == [False, False, False, True]
    assert set(stores[0].paused(T0)) == {"acme"}
    for s in stores:
        s.close()


@pytest.mark.postgres
def test_a_frozen_worker_inside_a_transaction_does_not_stall_the_fleet(
    pg: PostgresBackend,
) -> None:
    """A worker frozen (SIGSTOP, a paused VM) between a statement and its COMMIT holds its
    row locks; the server ends such a session after ``idle_transaction_timeout``, so the
    other workers' rate slots (and claims) go on instead of waiting forever."""
    import psycopg

    frozen_store = pg.open(idle_transaction_timeout=1.5)
    live = pg.open()
    frozen = None
    try:
        assert live.rate_slot("acme:shared", 1.0, T0) is not None
        frozen = frozen_store._connect()  # type: ignore[attr-defined]
        frozen.execute(  # one round trip: the lock is taken, then the session falls silent
            "BEGIN; SELECT next_slot FROM rate_buckets WHERE bucket = 'acme:shared' FOR UPDATE"
        )
        # ... and the frozen worker sends nothing more: its transaction sits idle.
        done = threading.Event()

        def take_slot() -> None:
            live.rate_slot("acme:shared", 1.0, T0 + 5)
            done.set()

        worker = threading.Thread(target=take_slot, daemon=True)
        worker.start()
        worker.join(30)
        assert done.is_set(), "the live worker still waits for the frozen worker's row lock"
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):  # ended by the server
            frozen.execute("COMMIT")
    finally:
        frozen_store.close()  # its connections too: a lock still held is let go
        if frozen is not None:
            frozen.close()
        live.close()
