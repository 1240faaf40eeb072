"""Invariant 3 of DESIGN.md: a crash at any point of the send path loses nothing.

The sender runs in a child process (a Relay built from environment variables, delivering
one document until settled) against an Acme sandbox in this process. The child is killed
with SIGKILL at each point of the send path: by ``DOCRELAY_CRASH_AT`` right after the intent
is stored, right after the response came back, and right before the outcome is committed;
and from outside while the request is at the provider (the sandbox took the document in and
holds its answer back). Then a new sender starts on the same store; once the dead sender's
lease has expired the document must end delivered (or duplicate), the provider must have
taken it in exactly once, and every request for it must have carried the same key.

Three provider variants: Acme deduplicating by key and reconciling by lookup (``key``);
Acme without deduplication, reconciled by lookup (``none``); and Acme deduplicating by key
without a lookup hook, so an interrupted send is simply resent with the same key
(``resend``).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmeSandbox
from docrelay import Document
from docrelay._builtins import default_key

pytestmark = pytest.mark.slow

SENDER = r"""
import json, os
from docrelay import Document, Relay
from acme_testprovider import AcmePlugin


class ResendAcme(AcmePlugin):
    reconcile = None  # no lookup: an interrupted send is resent with the same key


plugin = {
    "key": lambda: AcmePlugin(),
    "none": lambda: AcmePlugin(dedupe=False),
    "resend": lambda: ResendAcme(),
}[os.environ["CRASH_TEST_VARIANT"]]()
relay = Relay(
    os.environ["CRASH_TEST_STORE"],
    providers={"acme": {"base_url": os.environ["CRASH_TEST_BASE_URL"],
                        "client_id": "acme-client", "client_secret": "acme-secret-value"}},
    engine={"lease_seconds": 0.5, "retry_wait_initial": 0.01, "retry_wait_max": 0.02,
            "deferral_initial": 0.05, "deferral_max": 0.2, "poll_initial": 0.01},
    plugins=[plugin],
    autoload=False,
)
for i in range(int(os.environ.get("CRASH_TEST_DOCS", "1"))):
    relay.submit(Document(id=f"inv-{i + 1}", provider="acme", payload=b'{"amount": 1}',
                          content_type="application/json"))
statuses = relay.run_until_settled(timeout=15)
print(json.dumps([s.to_dict() for s in statuses]))
"""

DOC = Document(
    id="inv-1", provider="acme", payload=b'{"amount": 1}', content_type="application/json"
)
VARIANTS = ["key", "none", "resend"]
POINTS = ["after_intent", "after_response", "before_commit", "in_flight"]


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[AcmeSandbox]:
    variant = request.node.callspec.params["variant"]
    point = request.node.callspec.params["point"]
    sbx = AcmeSandbox(dedupe=variant != "none", faults=["slow*1:2"] if point == "in_flight" else [])
    sbx.start()
    yield sbx
    sbx.stop()


def _env(
    store: str, sbx: AcmeSandbox, variant: str, crash_at: str | None, docs: int = 1
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    env.update(
        CRASH_TEST_STORE=store, CRASH_TEST_BASE_URL=sbx.url, CRASH_TEST_VARIANT=variant,
        DOCRELAY_DISABLE_PLUGIN_AUTOLOAD="1", CRASH_TEST_DOCS=str(docs),
    )  # fmt: skip
    if crash_at:
        env["DOCRELAY_CRASH_AT"] = crash_at
    return env


def _sender(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SENDER],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _row(db: Path) -> tuple[str, str | None]:
    conn = sqlite3.connect(db)
    try:
        state, key = conn.execute("SELECT state, key FROM documents WHERE id = 'inv-1'").fetchone()
    finally:
        conn.close()
    return state, key


def _keys(sbx: AcmeSandbox) -> list[str | None]:
    out = []
    for r in list(sbx.requests):
        if r["method"] == "POST" and r["path"] == "/documents":
            out.append(next((v for k, v in r["headers"].items()
                             if k.lower() == "idempotency-key"), None))  # fmt: skip
    return out


def _effects(sbx: AcmeSandbox) -> list[dict[str, Any]]:
    return [e for e in list(sbx.effects) if e["kind"] == "document_received"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_crash_loses_nothing(
    variant: str, point: str, sandbox: AcmeSandbox, tmp_path: Path
) -> None:
    """Killed at *point*, restarted on the same store: one effect, one key, final."""
    db = tmp_path / "docrelay.db"
    store = f"sqlite:///{db}"
    key = default_key(DOC)

    # 1. the sender dies
    crash_at = None if point == "in_flight" else point
    child = _sender(_env(store, sandbox, variant, crash_at))
    if point == "in_flight":
        deadline = time.monotonic() + 10
        while not _effects(sandbox) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_effects(sandbox)) == 1, "the provider took the document in"
        child.kill()
    _out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err[-2000:]

    state, stored_key = _row(db)
    assert (state, stored_key) == ("sending", key), "the intent was stored before sending"
    expected_before = 0 if point == "after_intent" else 1
    assert len(_effects(sandbox)) == expected_before

    # 2. a new sender on the same store, after the lease expired
    child = _sender(_env(store, sandbox, variant, None))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-3000:]
    [status] = json.loads(out)

    assert status["state"] in ("delivered", "duplicate"), status
    assert status["key"] == key
    assert len(_effects(sandbox)) == 1
    assert _effects(sandbox)[0]["idempotency_key"] == key
    deadline = time.monotonic() + 5  # the held-back answer is logged once it is written
    while point == "in_flight" and not _keys(sandbox) and time.monotonic() < deadline:
        time.sleep(0.05)
    keys = _keys(sandbox)
    assert keys
    assert set(keys) == {key}
    if variant == "none":
        assert len(keys) == 1, "without deduplication the document is never resent"


#: The group commit's points: a batch's intents stored in one transaction, an answer in
#: while the others are still to send, all answers in and none stored, all stored.
BATCH_POINTS = ["after_batch_intents", "after_response", "before_commit", "after_outcomes_commit"]
BATCH = [
    Document(id=f"inv-{i}", provider="acme", payload=b'{"amount": 1}',
             content_type="application/json")
    for i in (1, 2, 3)
]  # fmt: skip


def _rows(db: Path) -> dict[str, tuple[str, str | None]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT id, state, key FROM documents").fetchall()
    finally:
        conn.close()
    return {i: (state, key) for i, state, key in rows}


@pytest.mark.parametrize("point", BATCH_POINTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_crash_in_a_batch_loses_nothing(
    variant: str, point: str, sandbox: AcmeSandbox, tmp_path: Path
) -> None:
    """Three documents claimed as one batch, their intents stored together and their answers
    stored together: killed at *point*, restarted on the same store, each document ends
    delivered with one effect at the provider, and every request for it carried its key."""
    db = tmp_path / "docrelay.db"
    store = f"sqlite:///{db}"
    keys = {d.id: default_key(d) for d in BATCH}

    child = _sender(_env(store, sandbox, variant, point, docs=len(BATCH)))
    _out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err[-2000:]

    rows = _rows(db)
    if point == "after_outcomes_commit":
        assert {state for state, _ in rows.values()} == {"delivered"}
    else:
        assert rows == {i: ("sending", k) for i, k in keys.items()}, "intents stored together"
    sent_before = {"after_batch_intents": 0, "after_response": 1}.get(point, len(BATCH))
    assert len(_effects(sandbox)) == sent_before

    child = _sender(_env(store, sandbox, variant, None, docs=len(BATCH)))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-3000:]
    statuses = {s["id"]: s for s in json.loads(out)}

    assert {s["state"] for s in statuses.values()} <= {"delivered", "duplicate"}, statuses
    assert {i: s["key"] for i, s in statuses.items()} == keys
    effects = [e["idempotency_key"] for e in _effects(sandbox)]
    assert sorted(effects) == sorted(keys.values()), "lost 0, taken in twice 0"
    posted = _keys(sandbox)
    assert set(posted) == set(keys.values()), "no request without its document's key"
    if variant == "none":
        assert len(posted) == len(BATCH), "without deduplication no document is resent"
    if point == "after_outcomes_commit":
        assert len(posted) == len(BATCH), "a stored answer is never sent again"
