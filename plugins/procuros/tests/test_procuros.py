"""End to end through docrelay's Relay against the Procuros sandbox on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docrelay
import pytest
from docrelay import DocState, Document, OutcomeKind, Relay
from docrelay_procuros import erp_status, provider_info
from docrelay_procuros._demo import INACTIVE_BUYER, UNKNOWN_SUPPLIER, sample
from docrelay_procuros.sandbox import ProcurosSandbox

FAST = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.05,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.1,
    "read_timeout": 2.0,
    "pause_seconds": 0.0,
}
TOKEN = "procuros-test-token"


def make_relay(tmp_path: Path, sb: ProcurosSandbox, **settings: Any) -> Any:
    cfg = {"base_url": sb.url, "api_token": TOKEN, **settings}
    return Relay(
        store="sqlite:///" + str(tmp_path / "d.db"), providers={"procuros": cfg}, engine=FAST
    )


def doc(doc_id: str, name: str = "order.json", kind: str = "order", **meta: str) -> Document:
    return Document(
        id=doc_id,
        provider="procuros",
        payload=sample(name),
        kind=kind,
        content_type="application/json",
        metadata=meta,
    )


def received(sb: ProcurosSandbox) -> list[dict[str, Any]]:
    return [e for e in sb.effects if e["kind"] == "transaction_received"]


def test_order_is_transmitted(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("PO-1"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-1")
    assert st.state == DocState.DELIVERED
    assert st.outcome.provider_status == "TRANSMITTED"
    assert st.provider_ref == received(sandbox)[0]["key"]
    assert len(received(sandbox)) == 1
    assert erp_status(st.outcome) == ("TRANSMITTED", None)
    assert sandbox.reported_errors == []


def test_inactive_relationship_is_no_action(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox]
) -> None:
    sb = sandbox_factory(inactive_receivers=[INACTIVE_BUYER])
    with make_relay(tmp_path, sb) as relay:
        relay.submit(doc("RE-1", "invoice.json", kind="invoice"))
        relay.run_until_settled(timeout=10)
        st = relay.status("RE-1")
    assert st.state == DocState.NO_ACTION
    assert st.outcome.message == "Trade relationship not yet active."
    assert erp_status(st.outcome) == ("NO_ACTION", None)
    assert len(received(sb)) == 1


def test_rejected_is_reported_then_the_correction_is_delivered(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox], validators: Any
) -> None:
    sb = sandbox_factory(unknown_parties=[UNKNOWN_SUPPLIER])
    with make_relay(tmp_path, sb) as relay:
        relay.submit(doc("PO-9", "order-unknown-supplier.json", document_number="PO-9"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-9")
        assert st.state == DocState.REJECTED
        assert st.outcome.status == 422
        assert {fe.field for fe in st.outcome.field_errors} == {
            "supplier",
            "content.header.orderIdentifier",
        }
        assert st.outcome.error_url.startswith(sb.url + "/portal/errors/")
        assert st.outcome.provider_status is None
        assert erp_status(st.outcome) == (None, st.outcome.error_url)
        assert received(sb) == []
        # on_failure reported it once, as DATA, with the ERP's document number
        assert len(sb.reported_errors) == 1
        report = sb.reported_errors[0]
        assert report["errorType"] == "DATA"
        assert report["transactionIdentifier"] == "PO-9"
        assert report["transactionType"] == "ORDER"
        assert report["errorContext"]["errorUrl"] == st.outcome.error_url
        assert "Could not resolve party" in report["errorReason"]
        # the corrected revision goes through
        relay.submit(doc("PO-9", "order.json", document_number="PO-9"))
        relay.run_until_settled(timeout=10)
        assert relay.status("PO-9").state == DocState.DELIVERED
    assert len(received(sb)) == 1
    assert len(sb.reported_errors) == 1


def test_report_after_two_failed_rounds(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox]
) -> None:
    sb = sandbox_factory(unknown_parties=[UNKNOWN_SUPPLIER])
    bad = json.loads(sample("order-unknown-supplier.json"))
    with make_relay(tmp_path, sb, report_after_failures=2) as relay:
        relay.submit(doc("PO-7", "order-unknown-supplier.json"))
        relay.run_until_settled(timeout=10)
        assert relay.status("PO-7").state == DocState.REJECTED
        assert sb.reported_errors == []
        bad["header"]["comments"] = "second try, still wrong"
        relay.submit(
            Document(
                id="PO-7",
                provider="procuros",
                kind="order",
                content_type="application/json",
                payload=json.dumps(bad).encode(),
            )
        )
        relay.run_until_settled(timeout=10)
        assert relay.status("PO-7").state == DocState.REJECTED
    assert len(sb.reported_errors) == 1
    assert sb.reported_errors[0]["transactionIdentifier"] == "PO-7"


def test_whole_body_with_kind_document(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("RE-2", "invoice.json", kind="document"))
        relay.run_until_settled(timeout=10)
        assert relay.status("RE-2").state == DocState.DELIVERED
    assert [e["type"] for e in received(sandbox)] == ["INVOICE"]


def test_kind_without_a_type_is_refused_at_submit(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    with make_relay(tmp_path, sandbox) as relay, pytest.raises(docrelay.DocumentError):
        relay.submit(doc("PO-0", kind="purchase_order"))


def test_second_document_with_the_same_payload_is_a_duplicate(
    tmp_path: Path, sandbox: ProcurosSandbox
) -> None:
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("PO-1"))
        relay.run_until_settled(timeout=10)
        relay.submit(doc("PO-1-copy"))
        relay.run_until_settled(timeout=10)
        first, second = relay.status("PO-1"), relay.status("PO-1-copy")
    assert first.state == DocState.DELIVERED
    assert second.state == DocState.DUPLICATE
    assert (second.outcome.message or "").startswith("Payload already received; transaction ")
    # confirmed by the lookup: the first document's transaction is PENDING (forwarded)
    assert second.outcome.rule == "procuros:400-payload-already-received-transmitted"
    assert second.provider_ref == first.provider_ref
    assert erp_status(second.outcome) == ("TRANSMITTED", None)
    assert len(received(sandbox)) == 1
    assert sandbox.reported_errors == []


def test_lost_answer_is_resent_and_recognised(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    sandbox.set_faults(["drop*1"])
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("PO-2"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-2")
        kinds = [a.outcome.kind for a in relay.history("PO-2") if a.outcome]
    assert OutcomeKind.UNKNOWN in kinds
    assert st.state == DocState.DUPLICATE
    assert len(received(sandbox)) == 1


def test_429_without_retry_after_then_delivered(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    sandbox.set_faults(["throttle*2:none"])
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("PO-3"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-3")
        history = relay.history("PO-3")
    assert st.state == DocState.DELIVERED
    throttled = [a.outcome for a in history if a.outcome and a.outcome.kind == "throttled"]
    assert len(throttled) == 2
    assert all(o.wait is None for o in throttled)
    assert len(received(sandbox)) == 1


def test_5xx_is_retried(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    sandbox.set_faults(["error*2:503"])
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("PO-4"))
        relay.run_until_settled(timeout=10)
        assert relay.status("PO-4").state == DocState.DELIVERED
    assert len(received(sandbox)) == 1


def test_wrong_token_fails_without_leaking_it(
    tmp_path: Path, sandbox: ProcurosSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-but-secret-token-123"
    with make_relay(tmp_path, sandbox, api_token=secret) as relay:
        relay.submit(doc("PO-5"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-5")
        dumped = json.dumps(st.to_dict(), default=str) + repr(relay.history("PO-5"))
    assert st.state == DocState.FAILED
    assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
    assert st.outcome.status == 401
    assert received(sandbox) == []
    assert sandbox.reported_errors == []  # the report is refused with the same token
    assert secret not in dumped
    assert secret not in caplog.text


def test_payload_that_is_not_json_is_rejected_and_reported(
    tmp_path: Path, sandbox: ProcurosSandbox
) -> None:
    bad = Document(id="X-1", provider="procuros", kind="invoice", payload=b"<Invoice/>")
    # check_payload = false: stored, rejected at delivery and reported (else refused at submit).
    with make_relay(tmp_path, sandbox, check_payload=False) as relay:
        relay.submit(bad)
        relay.run_until_settled(timeout=10)
        st = relay.status("X-1")
    assert st.state == DocState.REJECTED
    assert "not a JSON object" in (st.outcome.message or "")
    assert [r["transactionType"] for r in sandbox.reported_errors] == ["INVOICE"]
    assert len([r for r in sandbox.requests if r["path"] == "/v2/transactions"]) == 0


def test_demo_batch(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    batch = provider_info().demo(sandbox, "http://127.0.0.1:1/webhooks")
    with Relay(
        store="sqlite:///" + str(tmp_path / "d.db"),
        providers={"procuros": {"base_url": sandbox.url, **batch.settings}},
        engine=FAST,
    ) as relay:
        for d in batch.documents:
            relay.submit(d)
        relay.run_until_settled(timeout=10)
        states = {d.id: relay.status(d.id) for d in batch.documents}
    assert {k: v.state for k, v in states.items()} == {
        "PO-2024-10417": DocState.DELIVERED,
        "RE-2024-55810": DocState.NO_ACTION,
        "PO-2024-10418": DocState.REJECTED,
        "PO-2024-10417-copy": DocState.DUPLICATE,
    }
    assert states["PO-2024-10417"].outcome.provider_status == "TRANSMITTED"
    assert states["RE-2024-55810"].outcome.provider_status == "NO_ACTION"
    assert states["PO-2024-10418"].outcome.error_url
    assert len(states["PO-2024-10418"].outcome.field_errors) == 2
    assert len(received(sandbox)) == 2
    assert [r["transactionIdentifier"] for r in sandbox.reported_errors] == ["PO-2024-10418"]


# -- a lost answer: what did Procuros answer the first time? (seed 001) ------------------------


def _sends(sb: ProcurosSandbox) -> list[dict[str, Any]]:
    return [r for r in sb.requests if r["method"] == "POST" and r["path"] == "/v2/transactions"]


def _lookups(sb: ProcurosSandbox) -> list[dict[str, Any]]:
    return [r for r in sb.requests if r["path"].startswith("/v2/all-transactions")]


def test_lost_202_is_no_action_not_transmitted(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox]
) -> None:
    """The 202 (not forwarded) is lost; the resend gets "Payload already received". Procuros
    never forwarded it: the lookup of sent transactions says DROPPED -> no_action."""
    sb = sandbox_factory(inactive_receivers=[INACTIVE_BUYER])
    sb.set_faults(["drop*1"])
    with make_relay(tmp_path, sb) as relay:
        relay.submit(doc("RE-1", "invoice.json", kind="invoice"))
        relay.run_until_settled(timeout=10)
        st = relay.status("RE-1")
        kinds = [a.outcome.kind for a in relay.history("RE-1") if a.outcome]
    assert OutcomeKind.UNKNOWN in kinds
    assert st.state == DocState.NO_ACTION
    assert st.outcome.provider_status == "NO_ACTION"
    assert st.outcome.provider_status != "TRANSMITTED"
    assert erp_status(st.outcome) == ("NO_ACTION", None)
    (tx,) = received(sb)
    assert tx["forwarded"] is False
    assert st.provider_ref == tx["key"]
    assert st.outcome.rule == "procuros:400-payload-already-received-no-action"
    assert len(_sends(sb)) == 2
    assert len(_lookups(sb)) >= 1


def test_lost_201_is_transmitted_once_confirmed(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    sandbox.set_faults(["drop*1"])
    with make_relay(tmp_path, sandbox) as relay:
        relay.submit(doc("PO-2"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-2")
    (tx,) = received(sandbox)
    assert st.state == DocState.DUPLICATE
    assert st.outcome.provider_status == "TRANSMITTED"
    assert st.provider_ref == tx["key"]
    assert st.outcome.rule == "procuros:400-payload-already-received-transmitted"
    assert erp_status(st.outcome) == ("TRANSMITTED", None)


@pytest.mark.parametrize("list_status", [500, 403, 404])
def test_lost_202_with_a_failing_lookup_is_never_transmitted(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox], list_status: int
) -> None:
    """The lookup cannot tell: Procuros has the payload (final, never sent again), but the
    forward status is unknown, so no ERP status is claimed."""
    sb = sandbox_factory(inactive_receivers=[INACTIVE_BUYER], list_status=list_status)
    sb.set_faults(["drop*1"])
    with make_relay(tmp_path, sb) as relay:
        relay.submit(doc("RE-1", "invoice.json", kind="invoice"))
        relay.run_until_settled(timeout=10)
        st = relay.status("RE-1")
    assert st.state == DocState.DUPLICATE
    assert st.outcome.provider_status is None
    assert erp_status(st.outcome) == (None, None)
    assert "forward status unknown" in (st.outcome.message or "")
    assert f"HTTP {list_status}" in (st.outcome.message or "")
    assert st.outcome.rule == "procuros:400-payload-already-received-unconfirmed"
    assert len(_sends(sb)) == 2


@pytest.mark.parametrize(
    ("tx_status", "state", "erp"),
    [
        ("PENDING", DocState.DUPLICATE, "TRANSMITTED"),
        ("SUCCESS", DocState.DUPLICATE, "TRANSMITTED"),
        ("FAILED", DocState.DUPLICATE, None),
        ("UNKNOWN", DocState.DUPLICATE, None),
    ],
)
def test_lost_201_forward_status_follows_the_transaction_status(
    tmp_path: Path,
    sandbox_factory: Callable[..., ProcurosSandbox],
    tx_status: str,
    state: DocState,
    erp: str | None,
) -> None:
    sb = sandbox_factory(forwarded_status=tx_status)
    sb.set_faults(["drop*1"])
    with make_relay(tmp_path, sb) as relay:
        relay.submit(doc("PO-2"))
        relay.run_until_settled(timeout=10)
        st = relay.status("PO-2")
    assert st.state == state
    assert st.outcome.provider_status == erp


def test_lookup_can_be_switched_off(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox]
) -> None:
    sb = sandbox_factory(inactive_receivers=[INACTIVE_BUYER])
    sb.set_faults(["drop*1"])
    with make_relay(tmp_path, sb, lookup=False) as relay:
        relay.submit(doc("RE-1", "invoice.json", kind="invoice"))
        relay.run_until_settled(timeout=10)
        st = relay.status("RE-1")
    assert st.state == DocState.DUPLICATE
    assert st.outcome.provider_status is None
    assert _lookups(sb) == []


def test_unknown_after_the_round_is_reconciled_without_resending(
    tmp_path: Path, sandbox_factory: Callable[..., ProcurosSandbox]
) -> None:
    """Every answer of a round is lost (the 202, then two "Payload already received"): the
    document waits in unknown; the next round looks it up (reconcile) and sends nothing."""
    sb = sandbox_factory(inactive_receivers=[INACTIVE_BUYER])
    sb.set_faults(["drop*3"])
    relay = Relay(
        store="sqlite:///" + str(tmp_path / "d.db"),
        providers={"procuros": {"base_url": sb.url, "api_token": TOKEN}},
        engine={**FAST, "inprocess_attempts": 3},  # the round's three sends, all lost
    )
    with relay:
        relay.submit(doc("RE-1", "invoice.json", kind="invoice"))
        relay.run_until_settled(timeout=10)
        st = relay.status("RE-1")
        history = relay.history("RE-1")
    sends = [a for a in history if a.action == "send"]
    assert len(_sends(sb)) == len(sends) == 3
    assert all(a.outcome.kind == OutcomeKind.UNKNOWN for a in sends)
    last = history[-1]
    assert last.action == "reconcile"
    assert last.outcome.kind == OutcomeKind.NO_ACTION
    assert st.state == DocState.NO_ACTION
    assert st.outcome.provider_status == "NO_ACTION"
    assert st.provider_ref == received(sb)[0]["key"]


def test_unknown_not_at_procuros_is_sent_again(tmp_path: Path, sandbox: ProcurosSandbox) -> None:
    """Procuros does not list the payload (here: its state was wiped after the lost answers):
    reconcile says it is certainly not there, and the document is sent again."""
    sandbox.set_faults(["drop*3"])
    now = [time.time()]
    relay = Relay(
        store="sqlite:///" + str(tmp_path / "d.db"),
        providers={"procuros": {"base_url": sandbox.url, "api_token": TOKEN}},
        engine={**FAST, "inprocess_attempts": 3, "deferral_initial": 3600, "deferral_max": 3600},
        clock=lambda: now[0],
    )
    with relay:
        relay.submit(doc("PO-3"))
        relay.run_until_idle()
        assert relay.status("PO-3").state == DocState.UNKNOWN
        sandbox.reset()
        now[0] += 7200  # the deferred round is due (a fake clock: no waiting, no timing)
        relay.run_until_idle()
        st = relay.status("PO-3")
        history = relay.history("PO-3")
    reconciles = [a for a in history if a.action == "reconcile"]
    assert [a.outcome.kind for a in reconciles] == [OutcomeKind.RETRY]
    assert history[-1].action == "send"
    assert st.state == DocState.DELIVERED
    assert st.outcome.provider_status == "TRANSMITTED"
    assert st.provider_ref == received(sandbox)[0]["key"]
    assert len(received(sandbox)) == 1
