"""The PostgreSQL store's own hot path (``PostgresStore.claim`` and ``apply_many``; the
Store contract is in test_store_contract.py and runs on both backends): the claim in one
statement whose commit does not wait for the WAL flush, a batch's changes (each document's
UPDATE and attempt in one statement) sent as one message.

What they must keep of the shared SQL: a change whose lease is lost is not applied and
neither is its attempt; an error anywhere in the batch commits nothing of it and leaves the
pooled connection usable; the claim returns the batch in due order, never gives a leased
document to another owner, and leaves later writes synchronous.

Needs ``DOCRELAY_TEST_PG_URL`` (skipped without it, failed with ``DOCRELAY_REQUIRE_PG=1``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from docrelay import DocState, Document, Outcome, OutcomeKind
from docrelay._models import Attempt
from docrelay._store import Transition, open_store
from docrelay._store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
T0 = 1_700_000_000.0


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    if not PG_URL:
        if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
            pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set", pytrace=False)
        pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    s = open_store(PG_URL, schema=schema, heartbeat=False)
    assert isinstance(s, PostgresStore)
    try:
        yield s
    finally:
        s.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _doc(i: int) -> Document:
    return Document(id=f"doc-{i}", provider="acme", payload=b'{"n": 1}', kind="document")


def _intent(doc_id: str, number: int = 1, **columns: Any) -> Transition:
    attempt = Attempt(
        doc_id=doc_id,
        number=number,
        revision="r1",
        key=f"K-{doc_id}",
        action="send",
        started_at=T0 + 1,
        outcome=Outcome(kind=OutcomeKind.RETRY, message="in flight"),
    )
    return Transition(
        state=DocState.SENDING,
        key=f"K-{doc_id}",
        reason="in flight",
        release=False,
        attempt=attempt,
        **columns,
    )


def test_batch_skips_the_attempt_of_a_lost_lease(store: PostgresStore) -> None:
    """Each attempt is written only with its document's change: a document whose lease is
    gone gets neither, the others get both, in one transaction."""
    store.submit_many([_doc(1), _doc(2), _doc(3), _doc(4)], T0)
    assert [r.id for r in store.claim("w1", T0, 30.0, 2)] == ["doc-1", "doc-2"]
    assert [r.id for r in store.claim("w2", T0, 30.0, 1)] == ["doc-3"]
    changes = [(f"doc-{i}", "w1", _intent(f"doc-{i}")) for i in (1, 3, 2, 4)]
    assert store.apply_many(changes, T0 + 1) == ["doc-3", "doc-4"]
    got = {r.id: r for r in store.select()}
    assert got["doc-1"].state == got["doc-2"].state == DocState.SENDING
    assert got["doc-1"].key == "K-doc-1"
    assert got["doc-3"].state == got["doc-4"].state == DocState.QUEUED
    assert got["doc-3"].lease_owner == "w2"  # the other owner's lease untouched
    assert [a.key for a in store.history("doc-1")] == ["K-doc-1"]
    assert [a.key for a in store.history("doc-2")] == ["K-doc-2"]
    assert store.history("doc-3") == []
    assert store.history("doc-4") == []


def test_batch_commits_nothing_on_an_error(store: PostgresStore) -> None:
    """A statement that fails in the batch (here the second UPDATE: a text where a number
    goes) rolls back the ones before it; the connection goes back to the pool usable."""
    import psycopg

    store.submit_many([_doc(1), _doc(2)], T0)
    store.claim("w1", T0, 30.0, 2)
    bad = Transition.from_columns({"attempts": "not a number"})
    with pytest.raises(psycopg.Error):
        store.apply_many([("doc-1", "w1", _intent("doc-1")), ("doc-2", "w1", bad)], T0 + 1)
    assert {r.id: r.state for r in store.select()} == {
        "doc-1": DocState.QUEUED,
        "doc-2": DocState.QUEUED,
    }
    assert store.history("doc-1") == []
    # An attempt that fails (a number where the schema wants one, given as text) after
    # every UPDATE went through: the UPDATEs are rolled back too.
    broken = _intent("doc-2")
    assert broken.attempt is not None
    object.__setattr__(broken.attempt, "number", "two")
    with pytest.raises(psycopg.Error):
        store.apply_many([("doc-1", "w1", _intent("doc-1")), ("doc-2", "w1", broken)], T0 + 1)
    assert {r.id: r.state for r in store.select()} == {
        "doc-1": DocState.QUEUED,
        "doc-2": DocState.QUEUED,
    }
    assert store.history("doc-1") == []
    # The pool holds no connection left inside a transaction, and the store still works.
    assert all(c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE for c in store._idle)
    assert (
        store.apply_many(
            [("doc-1", "w1", _intent("doc-1")), ("doc-2", "w1", _intent("doc-2"))], T0 + 2
        )
        == []
    )
    assert [a.key for a in store.history("doc-2")] == ["K-doc-2"]


def test_one_statement_claim_orders_by_due_time_and_leases(store: PostgresStore) -> None:
    """The claim returns the batch in due order (the UPDATE's RETURNING has none of its
    own), sets the lease on every claimed row, and leaves leased rows to their owner."""
    for i, due in enumerate([50, 10, 40, 20, 30]):
        store.submit(_doc(i), T0)
        store.update(f"doc-{i}", None, {"next_attempt_at": T0 + due})
    got = store.claim("w1", T0 + 100, 30.0, 3)
    assert [r.id for r in got] == ["doc-1", "doc-3", "doc-4"]
    assert {(r.lease_owner, r.lease_until, r.next_attempt_at) for r in got} == {
        ("w1", T0 + 130, T0 + 130)
    }
    stored = {r.id: r for r in store.select()}
    assert stored["doc-1"].lease_owner == "w1"
    assert stored["doc-1"].next_attempt_at == T0 + 130
    assert [r.id for r in store.claim("w2", T0 + 100, 30.0, 10)] == ["doc-2", "doc-0"]
    assert store.claim("w3", T0 + 100, 30.0, 10) == []


def test_claim_and_batch_leave_no_open_transaction(store: PostgresStore) -> None:
    """After a claim (committed without waiting for its WAL flush) and a batch, the pooled
    connections are idle and a new session sees both."""
    import psycopg

    store.submit_many([_doc(1), _doc(2)], T0)
    store.claim("w1", T0, 30.0, 2)
    assert (
        store.apply_many(
            [("doc-1", "w1", _intent("doc-1")), ("doc-2", "w1", _intent("doc-2"))], T0 + 1
        )
        == []
    )
    assert all(c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE for c in store._idle)
    assert store.schema is not None
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {store.schema}")
        rows = conn.execute("SELECT id, state, lease_owner FROM documents ORDER BY id").fetchall()
    assert rows == [("doc-1", "sending", "w1"), ("doc-2", "sending", "w1")]
    # The claim's ``synchronous_commit = off`` was its transaction's alone (SET LOCAL): the
    # pooled connections commit every later write synchronously again.
    conn = store._acquire()
    try:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        store._release(conn)
