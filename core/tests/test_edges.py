"""Edges where a document was lost, misreported or sent twice: slow and dripping answers,
leases that ran out mid-answer, Retry-After without a ceiling, headers that cannot be sent,
internal errors in a round. Over loopback HTTP against the Acme sandbox.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import Context, HttpRequest, Relay, hookimpl

MakeRelay = Callable[..., Relay]


def _drain(relay: Relay, stop: threading.Event) -> None:
    while not stop.is_set():
        relay.run_until_idle()
        stop.wait(0.05)


def _race(first: Relay, second: Relay, sbx: AcmeSandbox, acme: Any) -> None:
    """*first* delivers in a thread; once its request is at the sandbox, *second* keeps
    claiming due documents (a second live worker) until *first* is done."""
    stop = threading.Event()
    worker = threading.Thread(target=first.run_until_idle)
    worker.start()
    deadline = time.monotonic() + 0.5
    while not acme.posts(sbx) and time.monotonic() < deadline:
        time.sleep(0.01)
    rival = threading.Thread(target=_drain, args=(second, stop))
    rival.start()
    worker.join(timeout=30)
    stop.set()
    rival.join(timeout=30)


def test_a_dripping_answer_is_never_sent_twice_by_a_second_live_worker(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """The 200's body drips for about 4 s, four times the lease: the first worker keeps its
    lease alive while the answer comes in, so the second live worker never claims the
    document, and the first worker's answer is the one recorded."""
    sbx = make_sandbox(faults=["drip*1:0.1"])
    engine = {"lease_seconds": 1.0, "request_deadline": 30.0}
    first = make_relay(sbx, engine=engine)
    second = make_relay(sbx, engine=engine)
    first.submit(acme.doc("inv-1"))

    _race(first, second, sbx, acme)

    assert len(acme.posts(sbx)) == 1, [r["status"] for r in acme.posts(sbx)]
    st = first.status("inv-1")
    assert st.state.value == "delivered"
    sends = [a for a in first.history("inv-1") if a.action == "send"]
    assert [a.status for a in sends] == [200]


def test_a_request_has_a_total_deadline_past_which_the_outcome_is_unknown(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """Each dripped byte resets the read timeout, so only a total deadline ends the wait;
    past it the request may have taken effect (unknown), and the resend with the same key
    finds it (409: the provider already has it)."""
    sbx = make_sandbox(faults=["drip*1:0.2"])
    relay = make_relay(sbx, engine={"read_timeout": 5.0, "request_deadline": 1.0})
    relay.submit(acme.doc("inv-1"))
    started = time.monotonic()
    relay.run_until_settled(timeout=30)
    took = time.monotonic() - started

    sends = [a for a in relay.history("inv-1") if a.action == "send"]
    assert sends[0].outcome is not None
    assert sends[0].outcome.kind.value == "unknown"
    assert "deadline" in (sends[0].outcome.message or "")
    assert relay.status("inv-1").state.value in ("delivered", "duplicate")
    assert len(acme.effects(sbx)) == 1
    assert len({a.key for a in sends}) == 1
    assert took < 8.0, took  # the drip alone would take 8.4 s


def test_a_retry_after_of_thirty_years_is_capped(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """``Retry-After: 999999999`` does not defer a document by 31 years: the wait is capped
    by ``max_wait`` (here 60 s)."""
    sbx = make_sandbox(faults=["throttle*1:999999999"])
    relay = make_relay(sbx, engine={"max_wait": 60.0, "retry_after_cap": 0.5})
    relay.submit(acme.doc("inv-1"))
    before = time.time()
    relay.run_until_idle()
    st = relay.status("inv-1")
    assert st.state.value == "retry_wait"
    assert st.next_attempt_at is not None
    assert st.next_attempt_at - before <= 61.0


def test_a_wait_past_the_maximum_age_fails_now_with_the_reason(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """When the next attempt would fall after the document's maximum age, waiting is
    pointless: the document ends ``failed`` now, and the reason says why."""
    sbx = make_sandbox(faults=["throttle*1:3600"])
    relay = make_relay(sbx, engine={"max_age": 600.0, "retry_after_cap": 0.5})
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    st = relay.status("inv-1")
    assert st.state.value == "failed"
    assert "maximum age" in (st.reason or "")


@pytest.mark.parametrize(
    "value",
    ["tok\r\nX-Injected: 1", "tök-ünïcode-€", "tok\nen"],
    ids=["crlf", "not-latin-1", "lf"],
)
def test_a_header_value_that_cannot_be_sent_is_a_config_error_before_the_wire(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any, value: str
) -> None:
    class BadHeader:
        @hookimpl
        def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
            return {"X-Tenant": value}

    sbx = make_sandbox()
    relay = make_relay(sbx, plugins=[AcmePlugin(), BadHeader()])
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    st = relay.status("inv-1")
    assert st.state.value == "failed"
    assert st.outcome is not None
    assert st.outcome.kind.value == "config_error"
    assert "X-Tenant" in (st.outcome.message or "")
    assert value not in (st.reason or "")
    assert value not in (st.outcome.message or "")
    assert acme.posts(sbx) == []


def test_an_internal_error_in_a_round_ends_in_a_final_state_with_the_reason(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A plugin bug that escapes the hooks' guards is recorded as an attempt, counts against
    the budget, and the document ends ``failed`` with the reason: never ``sending`` for
    ever."""

    class BrokenAcme(AcmePlugin):
        @hookimpl
        def build_request(self, document: Any, ctx: Context) -> HttpRequest:
            raise RuntimeError("boom in the provider plugin")

    sbx = make_sandbox()
    relay = make_relay(
        sbx, plugins=[BrokenAcme()], engine={"max_attempts": 2, "deferral_initial": 0.01}
    )
    relay.submit(acme.doc("inv-1"))
    relay.run_until_settled(timeout=20)
    st = relay.status("inv-1")
    assert st.state.value == "failed", st
    assert "internal error" in (st.reason or "")
    assert "boom in the provider plugin" in (st.reason or "")
    assert len(relay.history("inv-1")) >= 2
    assert acme.posts(sbx) == []


def test_an_answer_that_comes_after_the_lease_ran_out_is_kept(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A worker that stalls past its lease (here: its lease keeper gives up at once) gets
    its 200 after a second worker took the document over. The first worker's answer is the
    record of the business effect: it is kept in the history, never thrown away."""
    sbx = make_sandbox(faults=["drip*1:0.1"])
    engine = {"lease_seconds": 1.0}
    first = make_relay(sbx, engine=engine)
    first.engine.leases._max_hold = 0.0  # a stalled worker: its lease is not kept alive
    second = make_relay(sbx, engine=engine)
    first.submit(acme.doc("inv-1"))

    _race(first, second, sbx, acme)

    sends = [a for a in second.history("inv-1") if a.action == "send"]
    assert 200 in [a.status for a in sends], [(a.status, a.outcome) for a in sends]
    assert second.status("inv-1").state.value in ("delivered", "duplicate")
    assert len(acme.effects(sbx)) == 1
    assert {a.key for a in sends} == {sends[0].key}


def test_a_document_refused_before_sending_does_not_blame_the_provider(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    from docrelay import DocumentError

    class PickyAcme(AcmePlugin):
        @hookimpl
        def build_request(self, document: Any, ctx: Context) -> HttpRequest:
            raise DocumentError("the amount is missing")

    sbx = make_sandbox()
    relay = make_relay(sbx, plugins=[PickyAcme()])
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    st = relay.status("inv-1")
    assert st.state.value == "rejected"
    assert (st.reason or "").startswith("refused before sending"), st.reason
    assert "provider" not in (st.reason or "")
    assert acme.posts(sbx) == []
