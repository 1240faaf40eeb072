"""The delivery engine through :class:`Relay` against the Acme sandbox over loopback HTTP:
outcomes, retries, budgets, throttling, config errors, tokens, rate limits, workers, async
validation and held documents."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import (
    Context,
    Document,
    DocumentError,
    HttpRequest,
    ProviderInfo,
    RateLimit,
    Relay,
    hookimpl,
)
from docrelay._store import SQLStore
from docrelay.sandbox import SandboxRequest, SandboxResponse

MakeRelay = Callable[..., Relay]


def test_delivered(make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any) -> None:
    """One document, one request, delivered with the provider's reference and one attempt."""
    relay = make_relay(sandbox)
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()

    st = relay.status("inv-1")
    assert (st.state.value, st.attempts, st.reason) == ("delivered", 1, "delivered")
    assert [st.key] == [acme.header(r, "Idempotency-Key") for r in acme.posts(sandbox)]
    assert [st.provider_ref] == [e["key"] for e in acme.effects(sandbox)]
    [attempt] = relay.history("inv-1")
    assert ("send", "POST /documents", 200, st.key) == (
        attempt.action, attempt.request, attempt.status, attempt.key)  # fmt: skip


def test_rejected_keeps_errors_and_waits_for_a_correction(
    make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    """A 422 keeps the field errors and the error URL; the document is not sent again until
    a corrected revision is submitted, which gets a new key; the same content is unchanged."""
    relay = make_relay(sandbox)
    relay.submit(acme.doc("inv-1", b'{"amount": "INVALID"}'))
    relay.run_until_idle()

    st = relay.status("inv-1")
    assert st.state.value == "rejected"
    assert [(f.field, f.message) for f in st.field_errors] == [("amount", "must be positive")]
    assert st.error_url == "https://portal.acme.example/errors/1"
    old_key = st.key

    relay.run_until_idle()
    same = relay.store.submit(acme.doc("inv-1", b'{"amount": "INVALID"}'), time.time())
    assert same[1] == "unchanged"
    relay.submit(acme.doc("inv-1", b'{"amount": "INVALID"}'))
    relay.run_until_idle()
    assert len(acme.posts(sandbox)) == 1, "a rejected revision is never resent"
    assert relay.status("inv-1").state.value == "rejected"

    fixed = relay.submit(acme.doc("inv-1", b'{"amount": 5}'))
    assert (fixed.state.value, fixed.key) == ("queued", None)
    relay.run_until_idle()
    st = relay.status("inv-1")
    assert st.state.value == "delivered"
    assert st.key is not None
    assert old_key != st.key
    assert [old_key, st.key] == [acme.header(r, "Idempotency-Key") for r in acme.posts(sandbox)]


def test_server_errors_are_retried_then_delivered(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """Two 5xx answers, then delivered, within one round, each attempt recorded."""
    sbx = make_sandbox(faults=["error*2:503"])
    relay = make_relay(sbx)
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()

    st = relay.status("inv-1")
    assert (st.state.value, st.attempts) == ("delivered", 3)
    assert [r["status"] for r in acme.posts(sbx)] == [503, 503, 200]
    assert [(a.outcome.kind.value, a.status) for a in relay.history("inv-1") if a.outcome] == [
        ("retry", 503),
        ("retry", 503),
        ("delivered", 200),
    ]


def test_in_process_retries_are_stamina_s_and_a_first_answer_needs_no_retry_context(
    make_relay: MakeRelay,
    make_sandbox: Callable[..., AcmeSandbox],
    acme: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A round answered at its first attempt opens no stamina retry context; one that asks
    for in-process retries gets them all from stamina (its retry hooks see each, numbered
    from the first attempt's failure)."""
    import stamina
    from docrelay import _delivery

    contexts: list[int | None] = []
    real = stamina.retry_context

    def counting(**kw: Any) -> Any:
        contexts.append(kw.get("attempts"))
        return real(**kw)

    monkeypatch.setattr(_delivery.stamina, "retry_context", counting)
    sbx = make_sandbox()
    relay = make_relay(sbx)
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "delivered"
    assert contexts == []

    sbx.set_faults(["error*2:503"])
    relay.submit(acme.doc("inv-2"))
    with caplog.at_level("DEBUG", logger="docrelay.retries"):
        relay.run_until_idle()
    st = relay.status("inv-2")
    assert (st.state.value, st.attempts) == ("delivered", 3)
    assert [r["status"] for r in acme.posts(sbx)][1:] == [503, 503, 200]
    assert len(contexts) == 1
    scheduled = [r.getMessage() for r in caplog.records if r.name == "docrelay.retries"]
    assert [m.split(" scheduled")[0] for m in scheduled] == ["retry 1", "retry 2"]


def test_attempt_budget_then_requeue(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """When max_attempts are spent the document fails with a reason; requeue sends it again
    (with the same key)."""
    sbx = make_sandbox(faults=["error@1.0:500"])
    relay = make_relay(sbx, engine={"max_attempts": 3, "inprocess_attempts": 2})
    relay.submit(acme.doc("inv-1"))
    relay.run_until_settled(timeout=10)

    st = relay.status("inv-1")
    assert (st.state.value, st.attempts) == ("failed", 3)
    assert st.reason is not None
    assert "attempt budget spent (3 attempts)" in st.reason
    assert len(acme.posts(sbx)) == 3

    sbx.set_faults([])
    assert relay.requeue("inv-1").state.value == "queued"
    relay.run_until_idle()
    st2 = relay.status("inv-1")
    assert (st2.state.value, st2.attempts) == ("delivered", 1)
    assert {st.key} == {acme.header(r, "Idempotency-Key") for r in acme.posts(sbx)}


def test_throttling_does_not_count_against_the_budget(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """Three 429s with Retry-After: 0 and max_attempts=2: still delivered."""
    sbx = make_sandbox(faults=["throttle*3:0"])
    relay = make_relay(sbx, engine={"max_attempts": 2})
    relay.submit(acme.doc("inv-1"))
    relay.run_until_settled(timeout=10)

    st = relay.status("inv-1")
    assert (st.state.value, st.attempts) == ("delivered", 1)
    assert [r["status"] for r in acme.posts(sbx)] == [429, 429, 429, 200]


def test_throttling_waits_retry_after(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A short Retry-After is waited in process before the next request."""
    sbx = make_sandbox(faults=["throttle*1:1"])
    relay = make_relay(sbx)
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()

    first, second = acme.posts(sbx)
    assert (first["status"], second["status"]) == (429, 200)
    assert second["at"] - first["at"] >= 0.9
    assert relay.status("inv-1").state.value == "delivered"


def test_long_retry_after_is_stored_not_slept(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A Retry-After beyond retry_after_cap becomes the document's next attempt time."""
    sbx = make_sandbox(faults=["throttle*1:120"])
    relay = make_relay(sbx, engine={"retry_after_cap": 1.0})
    relay.submit(acme.doc("inv-1"))
    started = time.time()
    relay.run_until_idle()

    assert time.time() - started < 5
    st = relay.status("inv-1")
    assert st.state.value == "retry_wait"
    assert st.next_attempt_at is not None
    assert 119 <= st.next_attempt_at - started <= 125
    assert len(acme.posts(sbx)) == 1
    assert relay.run_until_idle() == 0, "nothing is due before the stored time"


def test_config_error_pauses_the_provider(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """The token endpoint refuses the client secret: the first document fails with the
    reason, the provider is paused, the other documents stay queued and nothing else is sent;
    a requeue lifts the pause."""
    sbx = make_sandbox(clients={acme.CLIENT_ID: "the-real-secret"})
    relay = make_relay(sbx)
    for i in range(4):
        relay.submit(acme.doc(f"inv-{i}"))
    relay.run_until_idle()

    states = {s.id: s.state.value for s in relay.statuses()}
    assert (states) == {"inv-0": "failed", "inv-1": "queued", "inv-2": "queued", "inv-3": "queued"}
    failed = relay.status("inv-0")
    assert failed.reason is not None
    assert "config error" in failed.reason
    assert "invalid_client" in failed.reason
    assert acme.paths(sbx) == ["POST /token"], "one token request, no document sent"
    assert list(relay.paused()) == ["acme"]

    relay.run_until_idle()
    assert len(sbx.requests) == 1

    sbx.config["clients"] = {acme.CLIENT_ID: acme.CLIENT_SECRET}  # the operator fixes it
    relay.requeue("inv-0")
    assert relay.paused() == {}
    relay.run_until_idle()
    assert {"delivered"} == {s.state.value for s in relay.statuses()}
    assert len(acme.posts(sbx)) == 4


class ForbiddingSandbox(AcmeSandbox):
    """An Acme sandbox whose document endpoint answers 403 (missing permission)."""

    def _post(self, req: SandboxRequest) -> SandboxResponse:
        return SandboxResponse.json(403, {"message": "client may not post documents"})


def test_config_error_from_the_send_pauses_the_provider(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A 403 on the document endpoint: one document is sent and fails, the rest of the queue
    (claimed in the same batch) is not sent."""
    sbx = make_sandbox(ForbiddingSandbox)
    relay = make_relay(sbx)
    for i in range(3):
        relay.submit(acme.doc(f"inv-{i}"))
    relay.run_until_idle()

    assert acme.paths(sbx) == ["POST /token", "POST /documents"]
    assert [s.state.value for s in relay.statuses()] == ["failed", "queued", "queued"]


def test_expired_token_is_refreshed_once(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """The sandbox's tokens live 1 s (token-ttl fault) while the relay's clock is a minute
    behind, so the cached token expires at the provider: 401, one refresh, delivered."""
    sbx = make_sandbox(faults=["token-ttl:1"])
    relay = make_relay(sbx, clock=lambda: time.time() - 60)
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    time.sleep(1.1)
    relay.submit(acme.doc("inv-2"))
    relay.run_until_idle()

    assert {"delivered"} == {s.state.value for s in relay.statuses()}
    expected = ["POST /token", "POST /documents", "POST /documents", "POST /token"]
    assert acme.paths(sbx) == [*expected, "POST /documents"]
    assert [r["status"] for r in acme.posts(sbx)] == [200, 401, 200]
    assert [a.outcome.kind.value for a in relay.history("inv-2") if a.outcome] == [
        "reauth",
        "delivered",
    ]
    assert relay.status("inv-2").attempts == 1, "a refresh does not use up the budget"


def test_token_refused_after_refresh_is_a_config_error(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A 401 that survives a token refresh is a configuration error, not an endless loop."""
    sbx = make_sandbox()
    relay = make_relay(sbx)
    relay.submit(acme.doc("inv-1"))
    # every token the sandbox issues is unknown to it a moment later
    original = sbx.tokens.issue
    sbx.tokens.issue = lambda subject, ttl=None: (original(subject, ttl)[0] + "x", 3600.0)  # type: ignore[method-assign]
    relay.run_until_idle()

    st = relay.status("inv-1")
    assert st.state.value == "failed"
    assert st.outcome is not None
    assert (st.outcome.kind.value, st.outcome.status) == ("config_error", 401)
    assert len(acme.posts(sbx)) == 2


def test_client_side_rate_limit(make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any) -> None:
    """RateLimit(5, 1.0): ten documents take at least ~1.8 s and the sandbox never sees more
    than five sends in any one-second window."""
    # 10% of the limit kept free: the sandbox sees arrival times, and on a loaded 2-core
    # machine they wander by tens of milliseconds around the slots the limiter hands out.
    relay = make_relay(
        sandbox, plugins=[AcmePlugin(rate_limit=RateLimit(5, 1.0))], engine={"rate_margin": 0.1}
    )
    for i in range(10):
        relay.submit(acme.doc(f"inv-{i}"))
    started = time.monotonic()
    relay.run_until_idle(workers=3)
    elapsed = time.monotonic() - started

    assert {"delivered"} == {s.state.value for s in relay.statuses()}
    assert elapsed >= 1.8
    times = sorted(r["at"] for r in acme.posts(sandbox))
    assert len(times) == 10
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 5


def test_many_workers_deliver_each_document_exactly_once(
    make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    """200 documents, four worker threads: 200 effects, each key once."""
    relay = make_relay(sandbox)
    relay.submit_many([acme.doc(f"inv-{i:03d}", f'{{"n": {i}}}'.encode()) for i in range(200)])
    relay.run_until_idle(workers=4)

    statuses = relay.statuses()
    assert sum(s.state.value == "delivered" for s in statuses) == 200
    keys = [acme.header(r, "Idempotency-Key") for r in acme.posts(sandbox)]
    assert len(keys) == 200
    assert sorted(keys) == sorted(s.key for s in statuses)
    assert len({e["idempotency_key"] for e in acme.effects(sandbox)}) == 200


def test_async_validation_polled_to_delivered(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """Kind "async": 202 accepted, then polled until valid: delivered."""
    sbx = make_sandbox(polls_until_done=2)
    relay = make_relay(sbx)
    relay.submit(acme.doc("inv-1", kind="async"))
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "accepted"

    relay.run_until_settled(timeout=10)
    st = relay.status("inv-1")
    assert st.state.value == "delivered"
    assert [a.action for a in relay.history("inv-1")] == ["send", "poll", "poll"]
    assert len(acme.posts(sbx)) == 1


def test_async_validation_polled_to_rejected(
    make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    """A "BADASYNC" payload is accepted, then rejected with the validator's field errors."""
    relay = make_relay(sandbox)
    relay.submit(acme.doc("inv-1", b'{"currency": "BADASYNC"}', kind="async"))
    relay.run_until_settled(timeout=10)

    st = relay.status("inv-1")
    assert st.state.value == "rejected"
    assert [(f.field, f.message) for f in st.field_errors] == [("currency", "must be ISO 4217")]


def test_held_until_the_other_document_is_delivered(
    make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    """A follow-up waits (held, not sent) while its order is rejected, and goes out once the
    corrected order is delivered."""
    relay = make_relay(sandbox)
    transitions: list[tuple[str, str, str]] = []
    relay.on_change(lambda rec, old, new: transitions.append((rec.id, old, new)))
    relay.submit(acme.doc("order-1", b'{"amount": "INVALID"}'))
    relay.submit(acme.doc("ret-1", kind="followup", metadata={"after": "order-1"}))
    relay.run_until_idle()

    st = relay.status("ret-1")
    assert (relay.status("order-1").state.value, st.state.value) == ("rejected", "held")
    assert st.reason == "waiting for document order-1 to be delivered"
    assert len(acme.posts(sandbox)) == 1

    relay.submit(acme.doc("order-1", b'{"amount": 3}'))
    relay.run_until_idle()

    assert [s.state.value for s in relay.statuses()] == ["delivered", "delivered"]
    order_key, ret_key = relay.status("order-1").key, relay.status("ret-1").key
    sent = [acme.header(r, "Idempotency-Key") for r in acme.posts(sandbox)]
    assert sent.index(order_key) < sent.index(ret_key)
    assert ("ret-1", "held", "delivered") in transitions or (
        ("ret-1", "held", "sending") in transitions
    )


def test_payload_over_the_limit_is_refused_at_submit(
    make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    """A document over the provider's max payload is refused before it is stored."""
    relay = make_relay(sandbox, settings={"max_payload_bytes": 10})

    with pytest.raises(DocumentError, match="over the acme limit of 10 bytes"):
        relay.submit(acme.doc("big", b"x" * 11))
    assert relay.statuses() == []


def test_store_is_sqlite(make_relay: MakeRelay, sandbox: AcmeSandbox) -> None:
    """The relay of these tests uses the embedded SQL store on a file."""
    assert isinstance(make_relay(sandbox).store, SQLStore)


# -- requests built once per revision ---------------------------------------------------------


class ReusingAcme(AcmePlugin):
    """Acme declaring ``reuse_request``; counts its builds (and may change ``ctx.state``)."""

    def __init__(self, *, touch_state: bool = False) -> None:
        super().__init__()
        self.builds: list[bytes] = []
        self.touch_state = touch_state

    @hookimpl
    def provider_info(self) -> ProviderInfo:
        return attrs.evolve(super().provider_info(), reuse_request=True)

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        self.builds.append(document.payload)
        if self.touch_state:
            ctx.state["builds"] = ctx.state.get("builds", 0) + 1
        return super().build_request(document, ctx)


def test_a_request_is_built_once_per_revision_when_the_provider_reuses_requests(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """``reuse_request``: in-process retries and a later round's resend of one revision send
    the request built the first time; a correction is built again; a settled document's
    request is let go."""
    sbx = make_sandbox(faults=["error*2:503"])
    plugin = ReusingAcme()
    relay = make_relay(sbx, plugins=[plugin])
    relay.submit(acme.doc("inv-1", b'{"amount": 1}'))
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "delivered"
    assert [r["status"] for r in acme.posts(sbx)] == [503, 503, 200]
    assert plugin.builds == [b'{"amount": 1}']
    assert len(relay.engine.built) == 0  # delivered: never sent again

    sbx.set_faults(["error@1.0:500"])
    relay2 = make_relay(sbx, plugins=[plugin2 := ReusingAcme()], engine={"inprocess_attempts": 1})
    relay2.submit(acme.doc("inv-2", b'{"amount": 2}'))
    relay2.run_until_idle()
    assert relay2.status("inv-2").state.value == "retry_wait"
    relay2.store.update("inv-2", None, {"next_attempt_at": 0})
    sbx.set_faults([])
    relay2.run_until_idle()
    assert relay2.status("inv-2").state.value == "delivered"
    assert plugin2.builds == [b'{"amount": 2}']  # the later round resent the same request

    sbx.set_faults(["error@1.0:500"])
    relay2.submit(acme.doc("inv-3", b'{"amount": 3}'))
    relay2.run_until_idle()
    assert relay2.status("inv-3").state.value == "retry_wait"
    relay2.submit(acme.doc("inv-3", b'{"amount": 4}'))  # a correction: a new revision
    sbx.set_faults([])
    relay2.run_until_idle()
    assert relay2.status("inv-3").state.value == "delivered"
    assert plugin2.builds[1:] == [b'{"amount": 3}', b'{"amount": 4}']
    assert len(relay2.engine.built) == 0
    posted = acme.posts(sbx)
    assert all(acme.header(r, "Authorization") for r in posted)  # auth on every attempt


def test_a_request_is_built_again_without_reuse_or_when_the_build_changes_state(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """Without ``reuse_request`` every attempt builds (the hook's documented contract); a
    build that changes ``ctx.state`` is never reused."""
    sbx = make_sandbox(faults=["error*2:503"])
    counting = ReusingAcme(touch_state=True)
    relay = make_relay(sbx, plugins=[counting])
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "delivered"
    assert len(counting.builds) == 3

    class Plain(ReusingAcme):
        @hookimpl
        def provider_info(self) -> ProviderInfo:
            return AcmePlugin.provider_info(self)

    sbx.set_faults(["error*2:503"])
    plain = Plain()
    relay = make_relay(sbx, plugins=[plain])
    relay.submit(acme.doc("inv-2"))
    relay.run_until_idle()
    assert len(plain.builds) == 3


def test_built_requests_are_bounded() -> None:
    """At most so many entries and so many body bytes (least recently used out first); one
    entry per document (a new revision replaces the old); a body too big is not kept."""
    from docrelay._round import _BuiltRequests

    built = _BuiltRequests(max_entries=3, max_bytes=400)
    for i in range(5):
        built.put(f"d{i}", ("r1",), HttpRequest("POST", "/x", body=b"x" * 10))
    assert len(built) == 3
    assert built.get("d0", ("r1",)) is None
    assert built.get("d4", ("r1",)) is not None
    built.put("d4", ("r2",), HttpRequest("POST", "/x", body=b"y" * 10))
    assert (len(built), built.get("d4", ("r1",))) == (3, None)
    built.put("big", ("r1",), HttpRequest("POST", "/x", body=b"z" * 101))
    assert built.get("big", ("r1",)) is None
    built.put("d5", ("r1",), HttpRequest("POST", "/x", body=b"w" * 100))
    built.put("d6", ("r1",), HttpRequest("POST", "/x", body=b"w" * 100))
    built.put("d7", ("r1",), HttpRequest("POST", "/x", body=b"w" * 100))
    built.put("d8", ("r1",), HttpRequest("POST", "/x", body=b"w" * 100))
    assert built._bytes <= 400
    built.drop("d8")
    assert built.get("d8", ("r1",)) is None
