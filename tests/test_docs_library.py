"""What docs/getting-started.md and docs/api.md promise to ERP connectors that embed docrelay:
no log noise unless the application configures logging, ``docrelay.FINAL_STATES``, and
``Relay.run_until_settled`` waiting for asynchronous answers (an AQI webhook, EBH polling)
over real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import docrelay
import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay.testing import FAST_ENGINE, WebhookServer
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox

QUIET_RUN = textwrap.dedent(
    """
    import sys
    import docrelay
    from acme_testprovider import AcmePlugin, AcmeSandbox
    from docrelay.testing import FAST_ENGINE

    with AcmeSandbox(faults=["error*3:503", "throttle*1:0"]) as sandbox:
        relay = docrelay.Relay(
            store="sqlite:///" + sys.argv[1],
            providers={"acme": {"base_url": sandbox.url, "client_id": "acme-client",
                                "client_secret": "acme-secret-value"}},
            engine=FAST_ENGINE,
            plugins=[AcmePlugin()],
            autoload=False,
        )
        relay.submit(docrelay.Document(id="INV-1", provider="acme", payload=b'{"amount": 1}',
                                       content_type="application/json"))
        relay.run_until_settled(timeout=30)
        attempts = relay.history("INV-1")
        state = relay.status("INV-1").state
        relay.close()
    assert state == docrelay.DocState.DELIVERED, state
    assert len(attempts) >= 4, attempts  # three 503s and a 429 were retried in process
    """
)


def test_library_run_with_retries_writes_nothing_to_stderr(tmp_path: Path) -> None:
    """A connector that configures no logging sees no stamina retry lines and no docrelay
    warnings on stderr, even when every attempt before the last one is retried."""
    result = subprocess.run(
        [sys.executable, "-c", QUIET_RUN, str(tmp_path / "quiet.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert result.stdout == ""


def test_engine_retries_reach_the_docrelay_logger_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An application that does configure logging finds the engine's retries on
    ``docrelay.retries`` at DEBUG, and nothing on stamina's own logger."""
    caplog.set_level(logging.DEBUG)
    with AcmeSandbox(faults=["error*2:503"]) as sandbox:
        relay = docrelay.Relay(
            store=f"sqlite:///{tmp_path / 'r.db'}",
            providers={
                "acme": {
                    "base_url": sandbox.url,
                    "client_id": "acme-client",
                    "client_secret": "acme-secret-value",
                }
            },
            engine=FAST_ENGINE,
            plugins=[AcmePlugin()],
            autoload=False,
        )
        relay.submit(docrelay.Document(id="INV-2", provider="acme", payload=b"{}"))
        relay.run_until_settled(timeout=30)
        relay.close()

    retries = [r for r in caplog.records if r.name == "docrelay.retries"]
    assert len(retries) >= 2
    assert {r.levelno for r in retries} == {logging.DEBUG}
    assert [r for r in caplog.records if r.name == "stamina"] == []


def test_final_states_are_exported() -> None:
    """``docrelay.FINAL_STATES`` names the states that end a revision's life."""
    assert "FINAL_STATES" in docrelay.__all__
    expected = {"delivered", "duplicate", "no_action", "rejected", "failed"}
    assert expected == {s.value for s in docrelay.FINAL_STATES}


@pytest.fixture
def aqi() -> Iterator[AqiSandbox]:
    with AqiSandbox() as sandbox:
        yield sandbox  # type: ignore[misc]


WEBHOOK_SECRET = "docs-library-webhook-secret"


def _aqi_relay(tmp_path: Path, sandbox: AqiSandbox) -> docrelay.Relay:
    return docrelay.Relay(
        store=f"sqlite:///{tmp_path / 'aqi.db'}",
        providers={
            "aqi": {
                "base_url": sandbox.url,
                "subscription_key": str(sandbox.config["subscription_key"]),
                "business_code": "1000",
                "webhook_secret": WEBHOOK_SECRET,
            }
        },
        engine=FAST_ENGINE,
    )


def _order(doc_id: str, name: str = "order") -> docrelay.Document:
    return sample_document(doc_id, "order", name, orderReference="C" + doc_id.replace("-", ""))


def test_run_until_settled_waits_for_the_webhook(tmp_path: Path, aqi: AqiSandbox) -> None:
    """An AQI order is accepted (200), then validated asynchronously: the answer arrives as
    an ``accounting/EDIErrorSent`` webhook at the relay's WSGI app. ``run_until_settled``
    waits for it, and says that every document is final."""
    relay = _aqi_relay(tmp_path, aqi)
    with WebhookServer(relay.wsgi_app) as server:
        aqi.register_callback(f"{server.url}/aqi/{WEBHOOK_SECRET}", ["accounting/EDIErrorSent"])
        relay.submit(_order("ORD-1"))
        relay.submit(_order("ORD-2", "order_error_in_file"))

        result = relay.run_until_settled(timeout=60)

    states = {s.id: s.state for s in result}
    relay.close()
    assert states == {"ORD-1": docrelay.DocState.DELIVERED, "ORD-2": docrelay.DocState.REJECTED}
    assert result.settled
    assert not result.timed_out
    assert result.pending == []


def test_run_until_settled_says_when_the_timeout_passed(tmp_path: Path, aqi: AqiSandbox) -> None:
    """Nobody receives AQI's webhook here: the order stays accepted, and the result says
    that the timeout passed with a document still pending."""
    relay = _aqi_relay(tmp_path, aqi)
    relay.submit(_order("ORD-3"))

    result = relay.run_until_settled(timeout=1.0)

    relay.close()
    assert [s.state for s in result] == [docrelay.DocState.ACCEPTED]
    assert result.timed_out
    assert not result.settled
    assert [s.id for s in result.pending] == ["ORD-3"]
