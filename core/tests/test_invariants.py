"""The invariants of DESIGN.md, each proved over loopback HTTP (the crash invariant, with a
killed process, lives in tests/test_crash.py):

1. A document is never sent twice without the same idempotency key.
2. The idempotency key and the intent to send are stored before the request leaves.
4. A delivered, duplicate or no_action document is never sent again.
5. Secrets never appear in logs, attempt records, errors or output.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import (
    ConfigError,
    Context,
    DocrelayError,
    DocumentError,
    EngineSettings,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    Relay,
    TransportError,
    hookimpl,
)
from docrelay._builtins import default_key
from docrelay._engine import ProviderRuntime
from docrelay.sandbox import SandboxRequest, SandboxResponse

MakeRelay = Callable[..., Relay]

# -- 1. never sent twice without the same key ------------------------------------------------


def _keys(sbx: AcmeSandbox, acme: Any) -> list[str | None]:
    return [acme.header(r, "Idempotency-Key") for r in acme.posts(sbx)]


def test_same_key_across_retries_and_a_lost_answer(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A 5xx, then an answer lost after the provider took the document, then the resend:
    three requests, one key, one business effect, and the document counts as delivered."""
    sbx = make_sandbox(faults=["error*1:500", "drop*1"])
    relay = make_relay(sbx)
    d = acme.doc("inv-1")
    relay.submit(d)
    relay.run_until_settled(timeout=10)

    st = relay.status("inv-1")
    assert st.state.value in ("delivered", "duplicate")
    assert _keys(sbx, acme) == [default_key(d)] * 3
    assert [r["status"] for r in acme.posts(sbx)] == [500, 200, 409]
    assert len(acme.effects(sbx)) == 1
    assert {a.key for a in relay.history("inv-1")} == {default_key(d)}


def test_same_key_after_a_restart(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A new relay (new engine, new plugin host) on the same store resends with the key the
    first one stored."""
    sbx = make_sandbox(faults=["error*3:503"])
    first = make_relay(sbx, engine={"inprocess_attempts": 1, "deferral_initial": 0.01})
    first.submit(acme.doc("inv-1"))
    first.run_until_idle()
    assert first.status("inv-1").state.value == "retry_wait"
    key = first.status("inv-1").key
    first.close()

    second = make_relay(sbx, engine={"inprocess_attempts": 1, "deferral_initial": 0.01})
    second.run_until_settled(timeout=10)

    assert second.status("inv-1").state.value == "delivered"
    assert _keys(sbx, acme) == [key] * 4
    assert len(acme.effects(sbx)) == 1


def test_same_key_without_provider_deduplication(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A provider that ignores keys: after a lost answer docrelay looks the document up
    instead of resending, so there is exactly one effect."""
    sbx = make_sandbox(dedupe=False, faults=["drop*1"])
    relay = make_relay(sbx, plugins=[AcmePlugin(dedupe=False)])
    relay.submit(acme.doc("inv-1"))
    relay.run_until_settled(timeout=10)

    st = relay.status("inv-1")
    assert st.state.value == "delivered"
    assert len(acme.effects(sbx)) == 1
    assert _keys(sbx, acme) == [st.key]
    assert "reconcile" in [a.action for a in relay.history("inv-1")]


# -- 2. key and intent stored before the request leaves ---------------------------------------


class WitnessSandbox(AcmeSandbox):
    """Reads the store through its own SQLite connection the moment a document request
    arrives (before faults and business logic), and notes what it finds."""

    db: Path
    seen: list[dict[str, Any]]

    def _serve(self, request: SandboxRequest) -> SandboxResponse | None:
        if request.method == "POST" and request.path == "/documents":
            key = request.header("Idempotency-Key")
            conn = sqlite3.connect(self.db)
            try:
                doc = conn.execute(
                    "SELECT id, state, key FROM documents WHERE key = ?", (key,)
                ).fetchall()
                attempts = conn.execute(
                    "SELECT number, key, action, outcome FROM attempts WHERE key = ?"
                    " ORDER BY number",
                    (key,),
                ).fetchall()
            finally:
                conn.close()
            self.seen.append({"key": key, "doc": doc, "attempts": attempts})
        return super()._serve(request)


def test_key_and_intent_are_stored_before_the_request(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any, tmp_path: Path
) -> None:
    """Every request (first try and retries) finds its document in state "sending" with the
    same key, and an unfinished send attempt for it, already committed."""
    sbx = make_sandbox(WitnessSandbox, faults=["error*2:503"])
    assert isinstance(sbx, WitnessSandbox)
    sbx.db, sbx.seen = tmp_path / "docrelay.db", []
    relay = make_relay(sbx)
    relay.submit(acme.doc("inv-1"))
    relay.submit(acme.doc("inv-2"))
    relay.run_until_idle()

    assert {s.state.value for s in relay.statuses()} == {"delivered"}
    assert len(sbx.seen) == 4
    for seen in sbx.seen:
        assert seen["key"] is not None
        [(_doc_id, state, key)] = seen["doc"]
        assert (state, key) == ("sending", seen["key"])
        _number, last_key, action, outcome = seen["attempts"][-1]
        assert (last_key, action, outcome) == (seen["key"], "send", None), seen
    tries = [len(s["attempts"]) for s in sbx.seen]
    assert tries == [1, 2, 3, 1]


# -- 4. final documents are never sent again ---------------------------------------------------


class NoActionAcme(AcmePlugin):
    """Acme, with 200 meaning "accepted, not forwarded"."""

    @hookimpl
    def classify_response(
        self, response: HttpResponse | None, error: TransportError | None, ctx: Context
    ) -> Outcome | None:
        if response is not None and response.status == 200:
            return Outcome(kind=OutcomeKind.NO_ACTION, status=200, rule="test:no-action")
        return super().classify_response(response, error, ctx)


@pytest.mark.parametrize("final", ["delivered", "duplicate", "no_action"])
def test_final_documents_are_never_sent_again(
    final: str, make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """Requeue refuses, the same content is unchanged, a changed revision is refused, and
    even a document made due again by hand is not sent."""
    sbx = make_sandbox(faults=["drop*1"] if final == "duplicate" else [])
    relay = make_relay(sbx, plugins=[NoActionAcme() if final == "no_action" else AcmePlugin()])
    relay.submit(acme.doc("inv-1"))
    relay.run_until_settled(timeout=10)
    assert relay.status("inv-1").state.value == final
    sent = len(acme.posts(sbx))

    with pytest.raises(DocumentError, match=f"is {final}: it is never sent again"):
        relay.requeue("inv-1")
    assert relay.store.submit(acme.doc("inv-1"), time.time())[1] == "unchanged"
    with pytest.raises(DocumentError, match=f"already {final}"):
        relay.submit(acme.doc("inv-1", b'{"amount": 11}'))
    with pytest.raises(DocumentError):
        relay.submit(acme.doc("inv-1", kind="async"))
    relay.run_until_idle()
    relay.store.update("inv-1", None, {"next_attempt_at": 0.0, "lease_owner": None})
    relay.run_until_idle()

    assert len(acme.posts(sbx)) == sent
    st = relay.status("inv-1")
    assert (st.state.value, st.next_attempt_at) == (final, None)
    assert relay.statuses(state=final)[0].revision == acme.doc("inv-1").revision


# -- 5. secrets never appear ------------------------------------------------------------------


class ChattyAcme(AcmePlugin):
    """A careless provider plugin that logs its auth headers (the token) and its settings
    (the client secret) in its own logger."""

    log = logging.getLogger("thirdparty.chatty")

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        headers = super().prepare_headers(request, ctx)
        self.log.debug("headers %s settings %s", headers, dict(ctx.settings))
        return headers


class ChattyPlugin:
    """A careless middleware that logs every state change with its outcome."""

    log = logging.getLogger("thirdparty.chatty")

    @hookimpl
    def on_state_change(self, document: Any, old: str, new: str, outcome: Any) -> None:
        self.log.info("%s: %s -> %s (%r)", document.id, old, new, outcome)


def test_secrets_never_appear(
    make_relay: MakeRelay,
    make_sandbox: Callable[..., AcmeSandbox],
    acme: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A batch with a known client secret, faults, an expired token and a wrong secret: no
    log line (any logger, DEBUG, urllib3 included), no byte of the SQLite files, no status,
    history or notification, and no exception message contains the secret or any token."""
    caplog.set_level(logging.DEBUG)
    secret = f"cs-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    sbx = make_sandbox(clients={"cid": secret}, faults=["error*1:500", "drop*1", "throttle*1:0"])
    relay = make_relay(
        providers={
            "acme": {"base_url": sbx.url, "client_id": "cid", "client_secret": secret},
            "beta": {"base_url": sbx.url, "client_id": "cid", "client_secret": wrong},
        },
        plugins=[ChattyAcme(), AcmePlugin("beta"), ChattyPlugin()],
    )
    for i in range(4):
        relay.submit(acme.doc(f"inv-{i}"))
    relay.submit(acme.doc("async-1", b'{"currency": "BADASYNC"}', kind="async"))
    relay.submit(acme.doc("bad-1", b'{"amount": "INVALID"}'))
    relay.submit(acme.doc("beta-1", provider="beta"))
    relay.run_until_settled(timeout=10)
    sbx.tokens.expire_all()  # every token the sandbox issued expires now
    relay.submit(acme.doc("late-1"))
    relay.run_until_settled(timeout=10)

    tokens = sbx.tokens.issued_tokens()
    assert len(tokens) >= 2, "the expired token was refreshed"
    states = {s.id: s.state.value for s in relay.statuses()}
    assert states["late-1"] == "delivered"
    assert states["beta-1"] == "failed"
    assert (states["bad-1"], states["async-1"]) == ("rejected", "rejected")

    errors: list[str] = []
    for call in (
        lambda: relay.requeue("inv-0"),
        lambda: relay.submit(acme.doc("inv-0", b"changed")),
        lambda: ProviderRuntime.build(
            AcmePlugin().provider_info(),
            {"client_id": "cid", "client_secret": secret, "base_url": f"ftp://u:{secret}@x"},
            EngineSettings(),
        ),
    ):
        try:
            call()
        except (DocrelayError, ConfigError) as exc:
            errors.append(f"{exc!s} {exc!r}")
    assert len(errors) == 3

    texts = {
        "log": caplog.text,
        "records": "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records),
        "status": json.dumps([s.to_dict() for s in relay.statuses()]) + repr(relay.statuses()),
        "history": repr([relay.history(s.id) for s in relay.statuses()]),
        "notifications": json.dumps(relay.store.notifications()),
        "paused": repr(relay.paused()),
        "errors": "\n".join(errors),
        "relay": repr(relay),
    }
    assert any("Bearer ***" in r.getMessage() for r in caplog.records), "the plugin did log"
    blobs = {p.name: p.read_bytes() for p in tmp_path.glob("docrelay.db*")}
    assert "docrelay.db" in blobs
    for value in [secret, wrong, *tokens]:
        for where, text in texts.items():
            assert value not in text, f"{value[:8]}... in {where}"
        for name, blob in blobs.items():
            assert value.encode() not in blob, f"{value[:8]}... in {name}"


def test_secret_registry_is_process_wide() -> None:
    """Threads share the registry: a secret registered in one is masked in another."""
    from docrelay._redact import redact, register_secret

    s = f"thread-{uuid.uuid4().hex}"
    t = threading.Thread(target=register_secret, args=(s,))
    t.start()
    t.join()

    assert redact(s) == "***"
