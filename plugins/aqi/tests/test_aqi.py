"""End to end: docrelay's Relay -> the AQI sandbox -> EDIErrorSent webhooks -> Relay.wsgi_app."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import docrelay
import pytest
import requests
from docrelay import DocState, Document, OutcomeKind
from docrelay_aqi import demo_batch, sample, sample_document
from docrelay_aqi.sandbox import AqiSandbox

KEY = "aqi-sandbox-key"
ENGINE = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.05,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.2,
    "held_recheck": 0.05,
    "connect_timeout": 2.0,
    "read_timeout": 2.0,
    "pause_seconds": None,
}


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@pytest.fixture
def sandbox() -> Iterator[AqiSandbox]:
    sb = AqiSandbox(seed=7)
    sb.start()
    yield sb
    sb.stop()


class Harness:
    def __init__(
        self, tmp_path: Path, sandbox: AqiSandbox, *, register: bool = True, **settings: Any
    ) -> None:
        self.sandbox = sandbox
        self.relay = docrelay.Relay(
            store="sqlite:///" + str(tmp_path / "d.db"),
            providers={"aqi": {"base_url": sandbox.url, "subscription_key": KEY, **settings}},
            engine=ENGINE,
            insecure_webhooks=True,  # served on 127.0.0.1 only, at /webhooks/aqi
        )
        self.server = make_server(
            "127.0.0.1",
            0,
            self.relay.wsgi_app,
            server_class=_ThreadingWSGIServer,
            handler_class=_Quiet,
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.webhook = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"
        if register:
            sandbox.register_callback(f"{self.webhook}/aqi", ["accounting/EDIErrorSent"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.relay.close()

    def until(self, check: Callable[[], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.relay.run_until_idle()
            if check():
                return
            time.sleep(0.02)
        raise AssertionError("condition not reached in time")

    def state(self, doc_id: str) -> DocState:
        return self.relay.status(doc_id).state

    def settle(self, doc_id: str, *states: DocState) -> docrelay.Relay:
        self.until(lambda: self.state(doc_id) in states)
        return self.relay

    def effects(self, key: str | None) -> list[dict[str, Any]]:
        return [e for e in self.sandbox.effects if e["key"] == key]

    def sent_ids(self) -> list[str | None]:
        return [
            r["headers"].get("X-Request-ID")
            for r in self.sandbox.requests
            if r["path"].startswith("/accounting/")
        ]


@pytest.fixture
def h(tmp_path: Path, sandbox: AqiSandbox) -> Iterator[Harness]:
    harness = Harness(tmp_path, sandbox)
    yield harness
    harness.close()


def order_doc(doc_id: str = "order-1", **changes: Any) -> Document:
    return sample_document(doc_id, "order", "order", **changes)


def test_order_is_accepted_then_delivered_by_the_webhook(h: Harness) -> None:
    h.relay.submit(order_doc())
    h.relay.run_until_idle()
    st = h.relay.status("order-1")
    assert st.state in (DocState.ACCEPTED, DocState.DELIVERED)
    h.settle("order-1", DocState.DELIVERED)
    st = h.relay.status("order-1")
    assert st.key is not None
    assert len(st.key) == 32
    assert int(st.key, 16) >= 0
    assert st.outcome is not None
    assert st.outcome.kind == OutcomeKind.DELIVERED
    assert st.outcome.message == "GET_ORDER ODE2024100001: The request was successfully validated."
    (effect,) = h.effects(st.key)
    assert effect["request_type"] == "GET_ORDER"
    assert st.provider_ref == effect["internal_request_id"]
    assert h.sent_ids() == [st.key]
    (sent,) = [r for r in h.sandbox.requests if r["path"].startswith("/accounting/")]
    assert sent["path"] == "/accounting/v1/businesses/1000/customers/TFI2021072801/orders"
    assert sent["headers"]["X-Subscription-Key"] == "***"  # sent; the request log masks it
    actions = [a.action for a in h.relay.history("order-1")]
    assert actions[-1] == "notification"


def test_error_in_file_then_corrected_revision_keeps_the_transaction_id(h: Harness) -> None:
    bad = sample_document("order-2", "order", "order_error_in_file")
    h.relay.submit(bad)
    h.settle("order-2", DocState.REJECTED)
    st = h.relay.status("order-2")
    first_key = st.key
    assert st.outcome is not None
    assert st.outcome.kind == OutcomeKind.REJECTED
    assert [(f.field, f.value) for f in st.field_errors] == [
        ("LINEITEMSTATUS", None),
        ("BILLTOLANGUAGECODE", "PL"),
    ]
    assert h.effects(first_key) == []

    data = json.loads(bad.payload)
    data["billToAddress"]["language"] = "pl"
    data["items"][0]["positionType"] = "SALES_ARTICLE"
    fixed = sample_document("order-2", "order", "order_error_in_file", **data)
    assert fixed.revision != bad.revision
    h.relay.submit(fixed)
    h.settle("order-2", DocState.DELIVERED)
    st = h.relay.status("order-2")
    assert st.key == first_key  # AQI: resend corrected data with the same transactionId
    assert len(h.effects(first_key)) == 1
    assert h.sent_ids() == [first_key, first_key]


def test_invoice_waits_for_its_order(h: Harness) -> None:
    invoice = sample_document("inv-1", "invoice", "invoice", order_ref="ODE2024100001")
    h.relay.submit(invoice)
    h.relay.run_until_idle()
    st = h.relay.status("inv-1")
    assert st.state == DocState.HELD
    assert st.reason == "order ODE2024100001 unknown to docrelay"
    assert h.sent_ids() == []

    h.relay.submit(order_doc())
    h.relay.run_until_idle()
    assert h.state("inv-1") == DocState.HELD
    h.settle("order-1", DocState.DELIVERED)
    h.settle("inv-1", DocState.DELIVERED)
    inv = h.relay.status("inv-1")
    order = h.relay.status("order-1")
    assert [e["request_type"] for e in h.sandbox.effects] == [
        "GET_ORDER",
        "GET_BOOKING_CONFIRMATION",
    ]
    assert h.sent_ids() == [order.key, inv.key]
    paths = [r["path"] for r in h.sandbox.requests if r["path"].startswith("/accounting/")]
    assert paths[-1].endswith("/orders/ODE2024100001/invoices")


def test_held_reason_names_the_pending_order(h: Harness) -> None:
    h.sandbox.config["callback_delay"] = 0.5
    h.relay.submit(order_doc())
    h.relay.run_until_idle()
    assert h.state("order-1") == DocState.ACCEPTED
    h.relay.submit(sample_document("ret-1", "return", "return", order_ref="ODE2024100001"))
    h.relay.run_until_idle()
    st = h.relay.status("ret-1")
    assert st.state == DocState.HELD
    assert st.reason == "waiting for order ODE2024100001 to be confirmed by AQI (now accepted)"
    h.settle("order-1", DocState.DELIVERED)
    h.relay.run_until_idle()
    st = h.relay.status("ret-1")
    assert st.state == DocState.HELD
    assert st.reason == "an invoice of order ODE2024100001 unknown to docrelay"


def test_hold_without_order_send(tmp_path: Path, sandbox: AqiSandbox) -> None:
    harness = Harness(tmp_path, sandbox, hold_without_order="send")
    try:
        harness.relay.submit(
            sample_document("inv-1", "invoice", "invoice", order_ref="ODE2024100001")
        )
        harness.settle("inv-1", DocState.REJECTED)
        st = harness.relay.status("inv-1")
        assert st.field_errors[0].field == "ORDERNO"
        assert harness.sandbox.effects == []
    finally:
        harness.close()


def test_layer1_error_is_rejected_without_reaching_aqi(h: Harness) -> None:
    h.relay.submit(order_doc(currency="euro"))
    h.settle("order-1", DocState.REJECTED)
    st = h.relay.status("order-1")
    assert st.outcome is not None
    assert st.outcome.status == 400
    assert st.field_errors[0].field == "currency"
    assert h.sandbox.transactions == {}


@pytest.mark.parametrize("status", [500, 401])
def test_bad_key_is_a_config_error_and_never_leaks(
    tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "totally-wrong-secret-key-4711"
    sb = AqiSandbox(bad_key_status=status)
    sb.start()
    relay = docrelay.Relay(
        store="sqlite:///" + str(tmp_path / "d.db"),
        providers={"aqi": {"base_url": sb.url, "subscription_key": secret}},
        engine=ENGINE,
    )
    try:
        relay.submit(order_doc())
        relay.run_until_idle()
        st = relay.status("order-1")
        assert st.state == DocState.FAILED
        assert st.outcome is not None
        assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
        dump = json.dumps([st.to_dict()] + [repr(a) for a in relay.history("order-1")])
        assert secret not in dump
        assert secret not in caplog.text
        assert sb.effects == []
    finally:
        relay.close()
        sb.stop()


def test_aqi_unavailable_is_retried_with_the_same_transaction_id(h: Harness) -> None:
    h.sandbox.set_faults(["error*2:500"])
    h.relay.submit(order_doc())
    h.settle("order-1", DocState.DELIVERED)
    st = h.relay.status("order-1")
    assert h.sent_ids() == [st.key] * 3
    assert len(h.effects(st.key)) == 1


def test_lost_answer_is_resent_with_the_same_id_and_processed_once(h: Harness) -> None:
    h.sandbox.set_faults(["drop*1"])
    h.relay.submit(order_doc())
    h.settle("order-1", DocState.DELIVERED, DocState.DUPLICATE)
    st = h.relay.status("order-1")
    assert st.key is not None
    assert len(h.sent_ids()) >= 2
    assert set(h.sent_ids()) == {st.key}
    time.sleep(0.2)  # let any duplicate-transaction notification arrive
    assert len(h.effects(st.key)) == 1
    assert h.state("order-1") in (DocState.DELIVERED, DocState.DUPLICATE)


def test_duplicate_callbacks_are_harmless(tmp_path: Path) -> None:
    sb = AqiSandbox(callback_duplicate=True)
    sb.start()
    harness = Harness(tmp_path, sb)
    try:
        harness.relay.submit(order_doc())
        harness.settle("order-1", DocState.DELIVERED)
        time.sleep(0.1)
        notes = [a for a in harness.relay.history("order-1") if a.action == "notification"]
        assert len(notes) == 1
        assert len(sb.notifications) == 2
    finally:
        harness.close()
        sb.stop()


def test_dropped_callback_is_recovered_by_redelivery(tmp_path: Path) -> None:
    sb = AqiSandbox(callback_drop_rate=1.0)
    sb.start()
    harness = Harness(tmp_path, sb)
    try:
        harness.relay.submit(order_doc())
        harness.until(lambda: bool(sb.undelivered))
        assert harness.state("order-1") == DocState.ACCEPTED
        r = requests.post(sb.url + "/_sandbox/redeliver", timeout=5)
        assert r.json()["redelivered"] == 1
        harness.settle("order-1", DocState.DELIVERED)
    finally:
        harness.close()
        sb.stop()


def test_all_six_request_types(h: Harness) -> None:
    ref = "ODE2024100001"
    h.relay.submit(order_doc())
    h.settle("order-1", DocState.DELIVERED)
    docs = [
        sample_document("inv", "invoice", "invoice", order_ref=ref),
        sample_document("pay", "payment", "payment", order_ref=ref),
        sample_document("gw", "goodwill", "goodwill", order_ref=ref),
        sample_document("can", "cancellation", "cancellation", order_ref=ref),
    ]
    for d in docs:
        h.relay.submit(d)
    for d in docs:
        h.settle(d.id, DocState.DELIVERED)
    h.relay.submit(sample_document("ret", "return", "return", order_ref=ref))
    h.settle("ret", DocState.DELIVERED)
    assert sorted(e["request_type"] for e in h.sandbox.effects) == sorted(
        [
            "GET_ORDER",
            "GET_BOOKING_CONFIRMATION",
            "GET_PAYMENT",
            "GET_GOODWILL",
            "GET_CANCELLATION",
            "GET_RETURN",
        ]
    )
    assert len({e["key"] for e in h.sandbox.effects}) == 6


def test_bad_documents_are_refused_before_sending(h: Harness) -> None:
    no_customer = Document(
        id="x-1", provider="aqi", kind="order", content_type="application/json",
        payload=sample("order"),
    )  # fmt: skip
    not_json = Document(
        id="x-2", provider="aqi", kind="order", payload=b"<order/>",
        metadata={"customer_number": "C1"},
    )  # fmt: skip
    h.relay.submit(no_customer)
    # A payload that is not JSON is refused at submit (ProviderInfo.content_type).
    with pytest.raises(docrelay.DocumentError, match="not JSON"):
        h.relay.submit(not_json)
    h.relay.run_until_idle()
    for d in (no_customer,):
        st = h.relay.status(d.id)
        assert st.state == DocState.REJECTED
        assert st.outcome is not None
        assert st.outcome.message is not None
        assert st.outcome.message.startswith(f"{d.id}: ")
    assert h.sent_ids() == []


def test_duplicate_transaction_notification_counts_as_delivered(tmp_path: Path) -> None:
    """AQI answers ERROR_IN_FILE "already processed" for a transactionId that ended OK: when
    that is the only answer docrelay gets, the document is a duplicate, not rejected."""
    sb = AqiSandbox(callback_drop_rate=1.0)
    sb.start()
    harness = Harness(tmp_path, sb)
    try:
        harness.relay.submit(order_doc())
        harness.until(lambda: len(sb.undelivered) == 1)
        st = harness.relay.status("order-1")
        assert st.state == DocState.ACCEPTED
        # the same transaction arrives again (an earlier resend whose answer was lost)
        r = requests.post(
            sb.url + "/accounting/v1/businesses/1000/customers/TFI2021072801/orders",
            data=sample("order"),
            headers={
                "X-Subscription-Key": KEY,
                "X-Request-ID": str(st.key),
                "Content-Type": "application/json",
            },
            timeout=5,
        )
        assert r.status_code == 200
        harness.until(lambda: len(sb.undelivered) == 2)
        (dup,) = [p for _, p in sb.undelivered if p["parameters"]["details"]["result"] != "OK"]
        r = requests.post(f"{harness.webhook}/aqi", json=dup, timeout=5)
        assert r.status_code < 300
        harness.settle("order-1", DocState.DUPLICATE)
        assert len(harness.effects(st.key)) == 1
    finally:
        harness.close()
        sb.stop()


def test_malformed_webhook_is_refused(h: Harness) -> None:
    r = requests.post(f"{h.webhook}/aqi", data=b"{not json", timeout=5)
    assert r.status_code == 400
    r = requests.post(
        f"{h.webhook}/aqi", json={"type": "accounting/invoiceCreated", "parameters": {}}, timeout=5
    )
    assert r.status_code < 300


def test_demo_batch(tmp_path: Path, sandbox: AqiSandbox) -> None:
    harness = Harness(tmp_path, sandbox, register=False)
    try:
        batch = demo_batch(sandbox=sandbox, webhook_url=harness.webhook)
        assert batch is not None
        hook = f"{harness.webhook}/aqi/{batch.settings['webhook_secret']}"
        assert [c["callbackUrl"] for c in sandbox.callbacks.values()] == [hook]
        assert batch.settings["subscription_key"] == KEY
        for d in batch.documents:
            harness.relay.submit(d)
        harness.relay.run_until_idle()
        order, bad, invoice, ret = (d.id for d in batch.documents)
        assert harness.state(invoice) == DocState.HELD
        assert harness.state(ret) == DocState.HELD
        harness.settle(order, DocState.DELIVERED)
        harness.settle(bad, DocState.REJECTED)
        harness.settle(invoice, DocState.DELIVERED)
        harness.settle(ret, DocState.DELIVERED)
        assert {f.field for f in harness.relay.status(bad).field_errors} == {
            "LINEITEMSTATUS",
            "BILLTOLANGUAGECODE",
        }
        assert len(sandbox.effects) == 3
    finally:
        harness.close()


# -- W (truncated, processed) and E (not processed) items, seed 004 ---------------------------

LONG_STREET = "Beispielstrasse am alten Hafen, Hinterhaus links"  # 48 > 35: truncated (W)
LONG_PRODUCT = "BEF12346512A/1-GRAU-XL-2024-EDITION-01"  # 38 > 35: not processed (E)


def _with_items(doc_id: str, product: str | None = None, street: str | None = None) -> Document:
    data = json.loads(sample("order"))
    if street is not None:
        data["billToAddress"]["street"] = street
    if product is not None:
        data["items"][0]["productId"] = product
    return sample_document(doc_id, "order", "order", **data)


def _severities(st: Any) -> list[tuple[str | None, str | None]]:
    return [(fe.field, fe.severity) for fe in st.field_errors]


def test_only_w_items_is_delivered_with_warnings(h: Harness) -> None:
    """A value too long for a non-critical field is truncated and the request processed:
    delivered, the W item kept as a warning."""
    h.relay.submit(_with_items("order-w", street=LONG_STREET))
    h.settle("order-w", DocState.DELIVERED, DocState.REJECTED)
    st = h.relay.status("order-w")
    assert st.state == DocState.DELIVERED, st.reason
    assert _severities(st) == [("BILLTOSTREET", "warning")]
    assert st.field_errors[0].value == LONG_STREET
    assert len(h.effects(st.key)) == 1


def test_only_w_items_under_error_in_file_is_still_delivered(
    tmp_path: Path, sandbox: AqiSandbox
) -> None:
    """Where AQI reports W-only results as ERROR_IN_FILE (sandbox warnings_result), the
    items decide: all W means processed, so delivered with warnings."""
    sandbox.config["warnings_result"] = "ERROR_IN_FILE"
    harness = Harness(tmp_path, sandbox)
    try:
        harness.relay.submit(_with_items("order-w", street=LONG_STREET))
        harness.settle("order-w", DocState.DELIVERED, DocState.REJECTED)
        st = harness.relay.status("order-w")
        assert st.state == DocState.DELIVERED, st.reason
        assert st.outcome.provider_status == "ERROR_IN_FILE"
        assert _severities(st) == [("BILLTOSTREET", "warning")]
        # The sandbox records a notification once its POST has returned, which may be after
        # the relay applied it: wait for the record, not for a time.
        deadline = time.monotonic() + 30
        while not sandbox.notifications and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sandbox.notifications[0]["payload"]["parameters"]["details"]["result"] == (
            "ERROR_IN_FILE"
        )
    finally:
        harness.close()


def test_an_e_item_rejects_and_keeps_the_w_items_as_warnings(h: Harness) -> None:
    h.relay.submit(_with_items("order-e", product=LONG_PRODUCT, street=LONG_STREET))
    h.settle("order-e", DocState.DELIVERED, DocState.REJECTED)
    st = h.relay.status("order-e")
    assert st.state == DocState.REJECTED, st.reason
    assert sorted(_severities(st)) == [
        ("BILLTOSTREET", "warning"),
        ("LINEITEMPRODUCTID", "error"),
    ]
    assert "1 error(s), 1 warning(s)" in st.outcome.message
    assert h.effects(st.key) == []


# -- DataSource: PreProd (UAT/test) or Prod ---------------------------------------------------


def test_notification_of_another_environment_is_refused_never_applied(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The sandbox (a test environment: PreProd) is told to send DataSource Prod: the webhook
    answers 400, the document stays accepted, the refusal is logged; once the right
    environment's notification comes (redelivery), it is applied."""
    r = requests.post(f"{h.sandbox.url}/_sandbox/data-source", json={"value": "Prod"}, timeout=5)
    assert r.status_code == 200
    h.relay.submit(order_doc())
    h.until(lambda: bool(h.sandbox.notifications))
    assert h.sandbox.notifications[0]["status"] == 400
    assert h.sandbox.notifications[0]["payload"]["parameters"]["DataSource"] == "Prod"
    h.relay.run_until_idle()
    st = h.relay.status("order-1")
    assert st.state == DocState.ACCEPTED
    assert [a.action for a in h.relay.history("order-1")] == ["send"]
    assert "DataSource 'Prod'" in caplog.text
    assert "expects 'PreProd'" in caplog.text
    h.sandbox.config["data_source"] = "PreProd"
    h.relay.submit(order_doc("order-2", orderReference="ODE2024100009"))
    h.settle("order-2", DocState.DELIVERED)
    assert h.state("order-1") == DocState.ACCEPTED


def test_production_expects_prod(tmp_path: Path, sandbox: AqiSandbox) -> None:
    """env = "production" expects DataSource Prod: PreProd is refused, Prod applied."""
    harness = Harness(tmp_path, sandbox, env="production")
    try:
        harness.relay.submit(order_doc("order-a"))
        harness.until(lambda: len(sandbox.notifications) == 1)
        assert sandbox.notifications[0]["status"] == 400
        assert harness.state("order-a") == DocState.ACCEPTED
        sandbox.config["data_source"] = "Prod"
        harness.relay.submit(order_doc("order-b", orderReference="ODE2024100009"))
        harness.settle("order-b", DocState.DELIVERED)
        assert harness.state("order-a") == DocState.ACCEPTED
    finally:
        harness.close()


def test_data_source_setting_overrides_the_environment(tmp_path: Path, sandbox: AqiSandbox) -> None:
    sandbox.config["data_source"] = "Prod"
    harness = Harness(tmp_path, sandbox, data_source="Prod")
    try:
        harness.relay.submit(order_doc())
        harness.settle("order-1", DocState.DELIVERED)
    finally:
        harness.close()


def test_malformed_data_sources_setting_is_a_config_error_before_sending(
    tmp_path: Path, sandbox: AqiSandbox
) -> None:
    harness = Harness(tmp_path, sandbox, data_sources="uat:PreProd")
    try:
        harness.relay.submit(order_doc())
        harness.relay.run_until_idle()
        st = harness.relay.status("order-1")
        assert st.state == DocState.FAILED
        assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
        assert st.outcome.message == (
            "aqi setting data_sources: 'uat:PreProd' is not ENVIRONMENT=DATASOURCE"
        )
        assert [r for r in sandbox.requests if r["path"].startswith("/accounting/")] == []
    finally:
        harness.close()
