"""The ``on_exchange`` observer hook: told once per HTTP exchange, with its purpose and its
step's outcome; an observer that raises never changes a document's state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import Relay, hookimpl

MakeRelay = Callable[..., Relay]


class Recorder:
    """A middleware plugin that records every exchange."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def on_exchange(self, document: Any, request: Any, response: Any, error: Any,
                    outcome: Any, elapsed: float, waited: float, attempt: int, purpose: str,
                    ctx: Any) -> None:  # fmt: skip
        self.seen.append({
            "doc": document.id if document else None,
            "purpose": purpose,
            "attempt": attempt,
            "outcome": outcome.kind.value if outcome else None,
            "status": response.status if response is not None else None,
            "error": error.kind if error is not None else None,
            "path": request.url.rsplit("/", 1)[-1],
            "timed": elapsed >= 0 and waited >= 0,
            "body": response.body if response is not None else None,
        })  # fmt: skip


def test_sends_and_token_fetches_are_told_with_their_outcome(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """A 503 then 200: the token fetch (no outcome, no body), then each send numbered with
    its classified outcome."""
    sbx = make_sandbox(faults=["error*1:503"])
    rec = Recorder()
    relay = make_relay(sbx, plugins=[AcmePlugin(), rec])
    relay.submit(acme.doc("inv-1"))
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "delivered"
    rows = [(r["purpose"], r["attempt"], r["outcome"], r["status"], r["path"]) for r in rec.seen]
    assert rows == [
        ("token", 1, None, 200, "token"),
        ("send", 1, "retry", 503, "documents"),
        ("send", 2, "delivered", 200, "documents"),
    ]
    assert all(r["timed"] for r in rec.seen)
    assert all(r["doc"] == "inv-1" for r in rec.seen)
    assert all(r["body"] == b"" for r in rec.seen if r["purpose"] == "token")


def test_polls_are_told_with_their_number(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    sbx = make_sandbox(polls_until_done=2)
    rec = Recorder()
    relay = make_relay(sbx, plugins=[AcmePlugin(), rec])
    relay.submit(acme.doc("inv-1", kind="async"))
    relay.run_until_settled(timeout=10)
    assert relay.status("inv-1").state.value == "delivered"
    rows = [(r["purpose"], r["attempt"], r["outcome"]) for r in rec.seen if r["purpose"] != "token"]
    assert rows == [("send", 1, "accepted"), ("poll", 1, "accepted"), ("poll", 2, "delivered")]


class RaisingProvider(AcmePlugin):
    """The provider's own plugin raises in on_exchange (its exceptions are not isolated by
    the host: the engine must keep them out of the round)."""

    @hookimpl
    def on_exchange(self) -> None:
        raise RuntimeError("observer broke")


class RaisingMiddleware:
    @hookimpl
    def on_exchange(self) -> None:
        raise RuntimeError("middleware observer broke")


@pytest.mark.parametrize("plugins", ["provider", "middleware"])
def test_a_raising_observer_never_changes_the_state(
    make_relay: MakeRelay,
    make_sandbox: Callable[..., AcmeSandbox],
    acme: Any,
    caplog: pytest.LogCaptureFixture,
    plugins: str,
) -> None:
    sbx = make_sandbox(faults=["error*2:503"])
    chosen = [RaisingProvider()] if plugins == "provider" else [AcmePlugin(), RaisingMiddleware()]
    relay = make_relay(sbx, plugins=chosen)
    relay.submit(acme.doc("inv-1"))
    with caplog.at_level(logging.ERROR):
        relay.run_until_settled(timeout=10)
    st = relay.status("inv-1")
    assert st.state.value == "delivered"
    assert [a.outcome.kind.value for a in relay.history("inv-1") if a.outcome][-1] == "delivered"
    assert "observer broke" in caplog.text
