"""Red team: AQI notifications across several delivery rounds, over HTTP with the AQI
sandbox and docrelay's own webhook server (waitress)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from docrelay import DocState, Relay
from docrelay._serve import WebhookServer
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox

SECRET = "whsec-redteam-5d1e9a77"
ENGINE = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "deferral_initial": 0.05,
          "held_recheck": 0.05}  # fmt: skip


class Hooked:
    def __init__(self, tmp: Path, sandbox: AqiSandbox) -> None:
        self.sandbox = sandbox
        self.relay = Relay(
            f"sqlite:///{tmp / 'aqi.db'}",
            engine=ENGINE,
            providers={"aqi": {"base_url": sandbox.url, "subscription_key": "aqi-sandbox-key",
                               "webhook_secret": SECRET}},
        )  # fmt: skip
        self.server = WebhookServer(self.relay.wsgi_app).__enter__()
        sandbox.register_callback(f"{self.server.url}/aqi/{SECRET}")

    def until(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            self.relay.run_until_idle()
            time.sleep(0.02)

    def state(self, doc_id: str) -> DocState:
        return self.relay.status(doc_id).state

    def notes(self, doc_id: str) -> list[str]:
        return [a.outcome.kind.value for a in self.relay.history(doc_id)
                if a.action == "notification" and a.outcome]  # fmt: skip

    def close(self) -> None:
        self.server.__exit__()
        self.relay.close()


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[Hooked]:
    sb = AqiSandbox(seed=5).start()
    h = Hooked(tmp_path, sb)
    yield h
    h.close()
    sb.stop()


def test_redteam_every_round_after_requeue_rejects_again(hooked: Hooked) -> None:
    """Four rounds of send -> ERROR_IN_FILE (byte-identical, same transactionId) ->
    requeue: every round ends rejected, each with its own notification."""
    h = hooked
    h.relay.submit(sample_document("bad-1", "order", "order_error_in_file"))
    for n in range(1, 5):
        h.until(lambda n=n: len(h.sandbox.notifications) == n)  # type: ignore[misc]
        h.until(lambda: h.state("bad-1") == DocState.REJECTED)
        assert h.notes("bad-1") == ["rejected"] * n
        if n < 4:
            h.relay.requeue("bad-1")
    assert [a.action for a in h.relay.history("bad-1")].count("send") == 4
