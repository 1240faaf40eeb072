"""Red team against notifications applied in order (issue 13: ``ingest_notification`` and
``apply_waiting``): a notification for an older revision and one for the current revision
ingested at once (two webhook threads or processes on one store).

Break found: ``ingest_notification`` recorded the older revision's notification as one of
the current round's waiting answers and only then marked "the latest waiting one" as for an
earlier revision. A current-revision notification ingested in that gap applied the older
revision's answer (the earliest waiting), and the older one's mark then fell on the current
one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from acme_testprovider import AcmeSandbox
from docrelay import Relay

MakeRelay = Callable[..., Relay]
HOOK_SECRET = "hook-secret-4d1f9a"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def relay(
    request: pytest.FixtureRequest,
    make_relay: MakeRelay,
    make_sandbox: Callable[..., AcmeSandbox],
) -> Iterator[Relay]:
    sbx = make_sandbox(polls_until_done=10_000)
    options: dict[str, Any] = {}
    store = None
    if request.param == "postgres":
        import psycopg

        store = os.environ.get("DOCRELAY_TEST_PG_URL")
        if not store:
            pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
        schema = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        options = {"store_options": {"schema": schema, "heartbeat": False}}
    relay = make_relay(sbx, settings={"webhook_secret": HOOK_SECRET},
                       engine={"poll_initial": 60.0}, store=store, **options)  # fmt: skip
    yield relay
    if store is not None:
        relay.close()
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {options['store_options']['schema']} CASCADE")


def _note(key: str, result: str = "ok", **extra: Any) -> bytes:
    return json.dumps({"event": "validated", "key": key, "result": result, **extra}).encode()


def _accepted(relay: Relay, acme: Any, payload: bytes) -> str:
    relay.submit(acme.doc("inv-1", payload, kind="async"))
    relay.run_until_idle()
    st = relay.status("inv-1")
    assert st.state.value == "accepted", st
    assert st.key is not None
    return st.key


@pytest.mark.parametrize("old_result", ["ok", "error"])
def test_an_older_revisions_notification_in_the_gap_never_decides_for_the_current(
    relay: Relay, acme: Any, monkeypatch: pytest.MonkeyPatch, old_result: str
) -> None:
    """Revision 1 is rejected, revision 2 sent and accepted. The provider's late answer for
    revision 1 and its answer for revision 2 arrive at once: revision 1's is recorded, and
    revision 2's is ingested whole before revision 1's ingest goes on. The document ends
    with revision 2's answer; revision 1's is marked for an earlier revision."""
    old_key = _accepted(relay, acme, b'{"amount": 10}')
    first = relay.ingest_notification("acme", _note(old_key, "error", errors=["amount"]),
                                      secret=HOOK_SECRET)  # fmt: skip
    assert first.state == "rejected"
    new_key = _accepted(relay, acme, b'{"amount": 11}')
    assert new_key != old_key
    new_result = "error" if old_result == "ok" else "ok"
    expected = "rejected" if new_result == "error" else "delivered"

    record = relay.store.record_notification
    calls: list[str] = []

    def in_the_gap(*args: Any, **kwargs: Any) -> bool:
        new = record(*args, **kwargs)
        if not calls:
            calls.append("old recorded")
            current = relay.ingest_notification(
                "acme", _note(new_key, new_result, errors=["current"]), secret=HOOK_SECRET
            )
            calls.append(f"current {current.status} {current.state}")
        return new

    monkeypatch.setattr(relay.store, "record_notification", in_the_gap)
    old = relay.ingest_notification(
        "acme", _note(old_key, old_result, errors=["old"], late=True), secret=HOOK_SECRET
    )
    monkeypatch.undo()

    assert old.status == "stale"
    assert calls == ["old recorded", f"current applied {expected}"]
    st = relay.status("inv-1")
    assert st.state.value == expected, st
    rows = relay.store.notifications("inv-1")
    marks = [(r["key"] == new_key, r["applied"], r["note"]) for r in rows[1:]]
    assert marks == [(False, 2, "for an earlier revision"), (True, 1, "applied")], rows
