"""End to end through docrelay's Relay against the eBillingHub sandbox on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import docrelay
import pytest
from docrelay import DocState, Document, OutcomeKind
from docrelay_ebh.sandbox import EbhSandbox

Relay: Any = getattr(docrelay, "Relay", None)
if Relay is None:  # pragma: no cover - until the core exports it
    from docrelay._relay import Relay

FAST = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.05,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.1,
    "poll_initial": 0.01,
    "poll_max": 0.05,
    "read_timeout": 2.0,
    "pause_seconds": 0.0,
}
KEY = "sandbox-provider-key"


def sample(name: str) -> bytes:
    return resources.files("docrelay_ebh").joinpath("samples", name).read_bytes()


@pytest.fixture(scope="module")
def server() -> Iterator[EbhSandbox]:
    sb = EbhSandbox()
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def sandbox(server: EbhSandbox) -> EbhSandbox:
    server.set_faults([])
    for name, default in EbhSandbox.options.items():
        server.set_option(name, default)
    server.reset()
    return server


def make_relay(tmp_path: Path, sb: EbhSandbox, **settings: Any) -> Any:
    cfg = {"base_url": sb.url, "producer_id": "FIRM-0042", "provider_key": KEY, **settings}
    return Relay(
        store="sqlite:///" + str(tmp_path / "d.db"),
        providers={"ebh": cfg},
        engine=FAST,
    )


def invoice(doc_id: str, name: str = "ubf_invoice_ok.xml", **metadata: str) -> Document:
    return Document(
        id=doc_id,
        provider="ebh",
        kind="invoice",
        content_type="application/xml",
        payload=sample(name),
        metadata=metadata,
    )


def effects(sb: EbhSandbox) -> list[dict[str, Any]]:
    return [e for e in sb.effects if e["kind"] == "validation_requested"]


def test_accepted_then_delivered(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """201 -> accepted; polls (202, 202) -> 200 Status 4 without errors -> delivered."""
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-ok"))
        relay.run_until_idle()
        st = relay.status("inv-ok")
        assert st.state == DocState.ACCEPTED
        rid = st.provider_ref
        assert rid == effects(sandbox)[0]["key"]
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-ok")
        assert st.state == DocState.DELIVERED
        assert st.provider_ref == rid
        assert st.provider_state["validated_invoice_url"].startswith(sandbox.url)
        actions = [(a.action, a.outcome.kind.value) for a in relay.history("inv-ok")]
        assert actions == [
            ("send", "accepted"),
            ("poll", "accepted"),
            ("poll", "accepted"),
            ("poll", "delivered"),
        ]
    assert len(effects(sandbox)) == 1


def test_accepted_then_rejected_with_field_errors(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """The currency rule: rejected with the seed's UBF_MESSAGE as a field error."""
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-bad", "ubf_invoice_bad_currency.xml"))
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-bad")
        assert st.state == DocState.REJECTED
        assert st.outcome.rule == "ebh:validation-errors"
        [fe] = st.field_errors
        assert fe.message == "The currency must follow ISO Codes"
        assert fe.severity == "UBF_MESSAGE"
        assert fe.rule.endswith("Validate_currency")
        assert "INV-2024-0118" in fe.field


def test_status3_resends_as_new_validation_request(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """Status 3 -> retry with resend -> a second POST that completes -> delivered."""
    sandbox.set_option("fail_status3", 1)
    sandbox.set_option("polls_until_done", 0)
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-3"))
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-3")
        assert st.state == DocState.DELIVERED
        keys = [e["key"] for e in effects(sandbox)]
        assert len(keys) == 2
        assert st.provider_ref == keys[1]
        assert st.provider_state["previous_validation_ids"] == [keys[0]]


def test_dropped_answer_reconciled_by_resending(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """The POST is processed, the answer lost: reconcile says resend (no lookup exists).

    The sandbox shows the price: two validation requests for one document, one orphaned.
    """
    sandbox.set_faults(["drop*1"])
    sandbox.set_option("polls_until_done", 0)
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-drop"))
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-drop")
        assert st.state == DocState.DELIVERED
        assert "reconcile" in [a.action for a in relay.history("inv-drop")]
    assert len(effects(sandbox)) == 2


def test_dropped_answer_left_for_operator(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """resend_after_unknown = false: reconcile gives no answer, the document waits."""
    sandbox.set_faults(["drop*1"])
    with make_relay(tmp_path, sandbox, resend_after_unknown=False) as relay:
        relay.submit(invoice("inv-drop2"))
        relay.run_until_settled(timeout=5)
        st = relay.status("inv-drop2")
        assert st.state == DocState.UNKNOWN
        assert st.next_attempt_at is None
    assert len(effects(sandbox)) == 1


def test_500_retried_then_delivered(tmp_path: Path, sandbox: EbhSandbox) -> None:
    sandbox.set_faults(["error*2:500"])
    sandbox.set_option("polls_until_done", 0)
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-500"))
        relay.run_until_settled(timeout=10)
        assert relay.status("inv-500").state == DocState.DELIVERED
    assert len(effects(sandbox)) == 1


def test_wrong_key_is_config_error_and_secret_never_shown(
    tmp_path: Path, sandbox: EbhSandbox
) -> None:
    with make_relay(tmp_path, sandbox, provider_key="not-the-key-s3cr3t") as relay:
        relay.submit(invoice("inv-401"))
        relay.run_until_settled(timeout=5)
        st = relay.status("inv-401")
        assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
        assert st.outcome.status == 401
        dumped = repr(st.to_dict()) + repr(relay.history("inv-401"))
        assert "not-the-key-s3cr3t" not in dumped
    assert effects(sandbox) == []


def test_old_style_v1_and_esf(tmp_path: Path, sandbox: EbhSandbox) -> None:
    sandbox.set_option("polls_until_done", 0)
    with make_relay(tmp_path, sandbox, url_style="old", api_version="v1") as relay:
        relay.submit(invoice("inv-esf", "esf_invoice_ok.xml", invoice_type="ESF"))
        relay.run_until_settled(timeout=10)
        assert relay.status("inv-esf").state == DocState.DELIVERED
    [effect] = effects(sandbox)
    assert (effect["version"], effect["invoice_type"]) == ("v1", "ESF")
    assert all("/validations/api/v1/" in r["path"] for r in sandbox.requests)


def test_too_large_rejected(tmp_path: Path, sandbox: EbhSandbox) -> None:
    sandbox.set_option("max_payload", 100)
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-big"))
        relay.run_until_settled(timeout=5)
        st = relay.status("inv-big")
        assert (st.state, st.outcome.status) == (DocState.REJECTED, 413)


def test_demo_batch_end_to_end(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """The demo's documents: delivered, rejected (currency), delivered."""
    import docrelay_ebh

    batch = docrelay_ebh.demo_batch(sandbox, "http://127.0.0.1:9/webhooks")
    relay = Relay(
        store="sqlite:///" + str(tmp_path / "demo.db"),
        providers={"ebh": dict(batch.settings)},
        engine=FAST,
    )
    with relay:
        for d in batch.documents:
            relay.submit(d)
        relay.run_until_settled(timeout=10)
        states = [relay.status(d.id).state for d in batch.documents]
    assert states == [DocState.DELIVERED, DocState.REJECTED, DocState.DELIVERED]
    assert len(effects(sandbox)) == 3


# -- every status of the poll (seed 003: GET ValidationRequest/{id}) ---------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 406, 409, 415])
def test_poll_error_is_a_config_error_not_the_invoice(
    tmp_path: Path, sandbox: EbhSandbox, status: int
) -> None:
    """A 4xx on the poll says our GET is wrong (seed: headers, parameters): the invoice is not
    rejected; the document fails with a config error and the provider is paused."""
    sandbox.set_option("poll_faults", str(status))
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-poll"))
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-poll")
        actions = [(a.action, a.outcome.kind.value) for a in relay.history("inv-poll")]
    assert st.state == DocState.FAILED
    assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
    assert st.outcome.status == status
    assert st.outcome.rule == f"ebh:poll-{status}-config"
    assert st.field_errors == ()
    assert "config error" in (st.reason or "")
    assert "provider paused" in (st.reason or "")
    assert actions == [("send", "accepted"), ("poll", "config_error")]
    assert len(effects(sandbox)) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_poll_server_error_polls_again_then_delivered(
    tmp_path: Path, sandbox: EbhSandbox, status: int
) -> None:
    sandbox.set_option("poll_faults", f"{status},{status}")
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-poll"))
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-poll")
        polls = [a for a in relay.history("inv-poll") if a.action == "poll"]
    assert st.state == DocState.DELIVERED
    assert [a.outcome.status for a in polls[:2]] == [status, status]
    assert len(effects(sandbox)) == 1


def test_poll_404_sends_a_new_validation_request(tmp_path: Path, sandbox: EbhSandbox) -> None:
    """An unknown request id (not in the seed's table): eBillingHub lost it; send again."""
    sandbox.set_option("poll_faults", "404")
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(invoice("inv-poll"))
        relay.run_until_settled(timeout=10)
        assert relay.status("inv-poll").state == DocState.DELIVERED
    assert len(effects(sandbox)) == 2
