"""The AQI sandbox over real HTTP on 127.0.0.1, with a real callback receiver."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docrelay_aqi
import pytest
import requests
from docrelay import HttpResponse, OutcomeKind
from docrelay.testing import classify
from docrelay_aqi import sample
from docrelay_aqi.sandbox import AqiSandbox

KEY = "aqi-sandbox-key"
BASE = "/accounting/v1/businesses/1000/customers/TFI2021072801/orders"


class Receiver:
    """A callback endpoint that records every notification it gets."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with receiver._cond:
                    receiver.bodies.append(body)
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/aqi"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.bodies) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.bodies)

    def for_tx(self, txid: str) -> list[dict[str, Any]]:
        with self._cond:
            return [b for b in self.bodies if b["parameters"]["transactionId"] == txid]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def _receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def receiver(_receiver: Receiver) -> Receiver:
    with _receiver._cond:
        _receiver.bodies.clear()
    _receiver.status = 200
    return _receiver


def subscribe(sb: AqiSandbox, receiver: Receiver) -> None:
    r = requests.post(
        sb.url + "/administration/v1/notification-callbacks",
        json={"callbackUrl": receiver.url, "notificationTypes": ["accounting/EDIErrorSent"]},
        headers={"X-Subscription-Key": KEY},
        timeout=5,
    )
    assert r.status_code == 200


def start(receiver: Receiver | None = None, **options: Any) -> AqiSandbox:
    sb = AqiSandbox(seed=1, **options)
    sb.start()
    if receiver is not None:
        subscribe(sb, receiver)
    return sb


@pytest.fixture(scope="module")
def _sandbox() -> Iterator[AqiSandbox]:
    sb = AqiSandbox(seed=1)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox(_sandbox: AqiSandbox, receiver: Receiver) -> AqiSandbox:
    """The module's sandbox, reset, with the receiver subscribed."""
    _sandbox.config.update(AqiSandbox.options)
    _sandbox.reset()
    _sandbox.set_faults([])
    subscribe(_sandbox, receiver)
    return _sandbox


def post(
    sb: AqiSandbox, path: str, body: Any, txid: str | None = None, key: str | None = KEY
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-Subscription-Key"] = key
    if txid is not None:
        headers["X-Request-ID"] = txid
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(sb.url + path, data=data, headers=headers, timeout=5)


def order(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sample("order"))
    data.update(changes)
    return data


def tx() -> str:
    return uuid.uuid4().hex


def result_of(receiver: Receiver, txid: str, count: int = 1) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while len(receiver.for_tx(txid)) < count and time.monotonic() < deadline:
        receiver.wait_for(len(receiver.bodies) + 1, timeout=0.2)
    got = receiver.for_tx(txid)
    assert len(got) >= count, f"no notification for {txid}"
    details: dict[str, Any] = got[count - 1]["parameters"]["details"]
    return details


def effects(sb: AqiSandbox, txid: str) -> list[dict[str, Any]]:
    return [e for e in sb.effects if e["key"] == txid]


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_bad_or_missing_key_answers_500_naming_the_key(
    sandbox: AqiSandbox, key: str | None
) -> None:
    r = post(sandbox, BASE, order(), key=key)
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"type", "title", "code", "description"}
    assert "subscription key" in body["description"]
    out = classify(docrelay_aqi, HttpResponse(status=r.status_code, body=r.content))
    assert out is not None
    assert out.kind == OutcomeKind.CONFIG_ERROR
    assert sandbox.transactions == {}


def test_bad_key_status_401() -> None:
    sb = start(bad_key_status=401)
    try:
        r = post(sb, BASE, order(), key="wrong")
        assert r.status_code == 401
        assert "subscription key" in r.json()["message"]
    finally:
        sb.stop()


def test_secondary_key_works(sandbox: AqiSandbox) -> None:
    assert post(sandbox, BASE, order(), key="aqi-sandbox-key-secondary").status_code == 200


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="bad_key_status"):
        AqiSandbox(bad_key_status=403)
    with pytest.raises(ValueError, match="content rule"):
        AqiSandbox(content_rules="nonsense")


# -- layer 1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"orderReference": "ODE20241000010001"}, "orderReference", "exceeds maximum length of 16"),
        ({"orderReference": "ODE-2024"}, "orderReference", "does not match regex pattern"),
        ({"currency": "eur"}, "currency", "does not match regex pattern"),
        ({"orderChannel": "FAX"}, "orderChannel", "is not defined in enum"),
        ({"orderDate": "01.10.2024"}, "orderDate", "does not match regex pattern"),
        (
            {"orderReference": None},
            "#",
            "Required properties are missing from object: orderReference.",
        ),
        ({"items": []}, "items", "less than minimum count of 1"),
        ({"carrier": "C" * 33}, "carrier", "exceeds maximum length of 32"),
    ],
)
def test_layer1_errors_answer_400_in_aqi_shape(
    sandbox: AqiSandbox, receiver: Receiver, changes: dict[str, Any], path: str, message: str
) -> None:
    txid = tx()
    r = post(sandbox, BASE, order(**changes), txid)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "RequestBody"
    assert body["title"] == "IncorrectMessage"
    assert body["code"] == 400
    assert f"Path:{path} Message:" in body["description"]
    assert message in body["description"]
    out = classify(docrelay_aqi, HttpResponse(status=400, body=r.content))
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    if path != "#":
        assert out.field_errors[0].field == path
    # "For all 400 and 500 errors, the request is not saved or processed in AQI"
    assert txid not in sandbox.transactions
    time.sleep(0.15)
    assert receiver.for_tx(txid) == []


def test_email_format_error_reads_like_the_seed(sandbox: AqiSandbox) -> None:
    data = order()
    data["billToAddress"]["email"] = "null"
    r = post(sandbox, BASE, data, tx())
    assert r.status_code == 400
    assert "Path:billToAddress.email Message:" in r.json()["description"]


def test_not_json_answers_400(sandbox: AqiSandbox) -> None:
    r = post(sandbox, BASE, b"<order/>", tx())
    assert r.status_code == 400
    assert r.json()["title"] == "IncorrectMessage"


def test_unknown_business_answers_404(sandbox: AqiSandbox) -> None:
    r = post(sandbox, BASE.replace("/1000/", "/9999/"), order(), tx())
    assert r.status_code == 404


# -- layer 2 ------------------------------------------------------------------------------------


def test_valid_order_is_confirmed_by_notification_and_recorded_once(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    txid = tx()
    r = post(sandbox, BASE, order(), txid)
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9a-f-]{36}", r.json()["internalRequestId"])
    details = result_of(receiver, txid)
    assert details["result"] == "OK"
    assert details["orderNo"] == "ODE2024100001"
    assert details["errorDetails"] == [
        {"ErrorDescription": "The request was successfully validated."}
    ]
    (note,) = receiver.for_tx(txid)
    assert note["type"] == "accounting/EDIErrorSent"
    assert note["parameters"]["requestType"] == "GET_ORDER"
    (effect,) = effects(sandbox, txid)
    assert effect["kind"] == "request_processed"
    assert effect["request_type"] == "GET_ORDER"
    assert effect["order"] == "ODE2024100001"


def test_error_in_file_like_the_seed_then_resubmission_with_the_same_id(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    txid = tx()
    bad = json.loads(sample("order_error_in_file"))
    assert post(sandbox, BASE, bad, txid).status_code == 200
    details = result_of(receiver, txid)
    assert details["result"] == "ERROR_IN_FILE"
    assert details["orderNo"] == "ODE2024100002"
    assert details["errorDetails"] == [
        {
            "fieldName": "LINEITEMSTATUS",
            "ErrorDescription": "Field LINEITEMSTATUS must not be empty.",
        },
        {
            "fieldName": "BILLTOLANGUAGECODE",
            "providedValue": "PL",
            "ErrorDescription": "The content of field BILLTOLANGUAGECODE may only consist of lower "
            "case letters.",
        },
    ]
    assert effects(sandbox, txid) == []
    bad["billToAddress"]["language"] = "pl"
    bad["items"][0]["positionType"] = "SALES_ARTICLE"
    assert post(sandbox, BASE, bad, txid).status_code == 200
    assert result_of(receiver, txid, count=2)["result"] == "OK"
    assert len(effects(sandbox, txid)) == 1


def test_reusing_a_transaction_id_that_ended_ok_is_a_duplicate_error(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    txid = tx()
    post(sandbox, BASE, order(), txid)
    assert result_of(receiver, txid)["result"] == "OK"
    assert post(sandbox, BASE, order(), txid).status_code == 200
    second = result_of(receiver, txid, count=2)
    assert second["result"] == "ERROR_IN_FILE"
    assert second["errorDetails"][0]["fieldName"] == "TRANSACTIONID"
    assert "already been processed" in second["errorDetails"][0]["ErrorDescription"]
    assert len(effects(sandbox, txid)) == 1
    assert sandbox.transactions[txid].state == "OK"


def test_resend_while_pending_is_ignored(receiver: Receiver) -> None:
    sb = start(receiver, callback_delay=0.3)
    try:
        txid = tx()
        first = post(sb, BASE, order(), txid).json()["internalRequestId"]
        second = post(sb, BASE, order(), txid).json()["internalRequestId"]
        assert first == second
        assert result_of(receiver, txid)["result"] == "OK"
        time.sleep(0.4)
        assert len(receiver.for_tx(txid)) == 1
        assert len(effects(sb, txid)) == 1
    finally:
        sb.stop()


def test_a_second_order_with_the_same_reference_is_an_error(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    a, b = tx(), tx()
    post(sandbox, BASE, order(), a)
    assert result_of(receiver, a)["result"] == "OK"
    post(sandbox, BASE, order(), b)
    details = result_of(receiver, b)
    assert details["result"] == "ERROR_IN_FILE"
    assert details["errorDetails"][0]["fieldName"] == "ORDERREFERENCE"


def test_missing_request_id_is_generated(sandbox: AqiSandbox, receiver: Receiver) -> None:
    assert post(sandbox, BASE, order()).status_code == 200
    (note,) = receiver.wait_for(1)
    assert re.fullmatch(r"[0-9a-f]{32}", note["parameters"]["transactionId"])


# -- message order ------------------------------------------------------------------------------

FOLLOW_UPS = [
    ("invoices", "invoice", "GET_BOOKING_CONFIRMATION"),
    ("cancellations", "cancellation", "GET_CANCELLATION"),
    ("goodwills", "goodwill", "GET_GOODWILL"),
    ("payments", "payment", "GET_PAYMENT"),
]


@pytest.mark.parametrize(("segment", "name", "request_type"), FOLLOW_UPS)
def test_follow_up_before_its_order_is_an_error_then_ok_after_the_order(
    sandbox: AqiSandbox, receiver: Receiver, segment: str, name: str, request_type: str
) -> None:
    path = f"{BASE}/ODE2024100001/{segment}"
    early = tx()
    assert post(sandbox, path, json.loads(sample(name)), early).status_code == 200
    details = result_of(receiver, early)
    assert details["result"] == "ERROR_IN_FILE"
    assert details["errorDetails"][0]["fieldName"] == "ORDERNO"
    assert receiver.for_tx(early)[0]["parameters"]["requestType"] == request_type

    o = tx()
    post(sandbox, BASE, order(), o)
    assert result_of(receiver, o)["result"] == "OK"
    # the same transactionId after ERROR_IN_FILE is processed again
    assert post(sandbox, path, json.loads(sample(name)), early).status_code == 200
    assert result_of(receiver, early, count=2)["result"] == "OK"
    (effect,) = effects(sandbox, early)
    assert effect["request_type"] == request_type


def test_return_needs_a_confirmed_invoice(sandbox: AqiSandbox, receiver: Receiver) -> None:
    o, r1, inv, r2 = tx(), tx(), tx(), tx()
    post(sandbox, BASE, order(), o)
    assert result_of(receiver, o)["result"] == "OK"
    post(sandbox, f"{BASE}/ODE2024100001/returns", json.loads(sample("return")), r1)
    details = result_of(receiver, r1)
    assert details["result"] == "ERROR_IN_FILE"
    assert details["errorDetails"][0]["fieldName"] == "INVOICEREFERENCE"
    post(sandbox, f"{BASE}/ODE2024100001/invoices", json.loads(sample("invoice")), inv)
    assert result_of(receiver, inv)["result"] == "OK"
    post(sandbox, f"{BASE}/ODE2024100001/returns", json.loads(sample("return")), r2)
    assert result_of(receiver, r2)["result"] == "OK"
    assert receiver.for_tx(r2)[0]["parameters"]["requestType"] == "GET_RETURN"
    assert sandbox.orders[("1000", "TFI2021072801", "ODE2024100001")].returns == 1


def test_layer1_checks_follow_up_bodies(sandbox: AqiSandbox) -> None:
    ret = json.loads(sample("return"))
    ret["returnReason"] = "CHANGED_MIND"
    r = post(sandbox, f"{BASE}/ODE2024100001/returns", ret, tx())
    assert r.status_code == 400
    assert "Path:returnReason" in r.json()["description"]


# -- callbacks ----------------------------------------------------------------------------------


def test_callback_registry(sandbox: AqiSandbox, receiver: Receiver) -> None:
    headers = {"X-Subscription-Key": KEY}
    url = sandbox.url + "/administration/v1/notification-callbacks"
    r = requests.post(
        url,
        json={
            "callbackUrl": "http://127.0.0.1:1/x",
            "notificationTypes": ["accounting/invoiceCreated"],
        },
        headers=headers,
        timeout=5,
    )
    assert r.status_code == 200
    entry = r.json()
    assert set(entry) == {"callbackUrl", "description", "id", "notificationTypes"}
    # EDIErrorSent is mandatory and always active
    assert entry["notificationTypes"] == ["accounting/invoiceCreated", "accounting/EDIErrorSent"]
    listed = requests.get(url, headers=headers, timeout=5).json()
    assert {c["callbackUrl"] for c in listed} == {receiver.url, "http://127.0.0.1:1/x"}
    assert requests.delete(f"{url}/{entry['id']}", headers=headers, timeout=5).status_code == 204
    assert requests.post(url, json={}, headers=headers, timeout=5).status_code == 400
    assert requests.post(url, json={"callbackUrl": "http://x"}, timeout=5).status_code == 500


def test_callback_duplicate_sends_each_notification_twice(receiver: Receiver) -> None:
    sb = start(receiver, callback_duplicate=True)
    try:
        txid = tx()
        post(sb, BASE, order(), txid)
        receiver.wait_for(2)
        assert len(receiver.for_tx(txid)) == 2
        assert receiver.for_tx(txid)[0] == receiver.for_tx(txid)[1]
        assert len(effects(sb, txid)) == 1
    finally:
        sb.stop()


def test_dropped_callbacks_can_be_redelivered(receiver: Receiver) -> None:
    sb = start(receiver, callback_drop_rate=1.0)
    try:
        txid = tx()
        post(sb, BASE, order(), txid)
        deadline = time.monotonic() + 5
        while not sb.undelivered and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.for_tx(txid) == []
        assert len(effects(sb, txid)) == 1  # the work was done; only the answer was lost
        r = requests.post(sb.url + "/_sandbox/redeliver", timeout=5)
        assert r.json() == {"redelivered": 1, "remaining": 0}
        assert receiver.for_tx(txid)[0]["parameters"]["details"]["result"] == "OK"
        notes = requests.get(sb.url + "/_sandbox/notifications", timeout=5).json()
        assert [n["dropped"] for n in notes["notifications"]] == [True, False]
    finally:
        sb.stop()


def test_callbacks_refused_by_the_receiver_are_kept() -> None:
    refusing = Receiver(status=503)
    sb = start(refusing)
    try:
        txid = tx()
        post(sb, BASE, order(), txid)
        refusing.wait_for(1)
        deadline = time.monotonic() + 5
        while not sb.undelivered and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(sb.undelivered) == 1
        refusing.status = 200
        assert sb.redeliver() == 1
        assert sb.undelivered == []
    finally:
        sb.stop()
        refusing.close()


# -- faults and reset ---------------------------------------------------------------------------


def test_error_fault_answers_a_retryable_500(sandbox: AqiSandbox, receiver: Receiver) -> None:
    sandbox.set_faults(["error*1:500"])
    txid = tx()
    r = post(sandbox, BASE, order(), txid)
    assert r.status_code == 500
    out = classify(docrelay_aqi, HttpResponse(status=500, body=r.content))
    assert out is not None
    assert out.kind == OutcomeKind.RETRY
    assert txid not in sandbox.transactions
    assert post(sandbox, BASE, order(), txid).status_code == 200


def test_throttle_fault_is_aqi_shaped(sandbox: AqiSandbox) -> None:
    sandbox.set_faults(["throttle*1:2"])
    r = post(sandbox, BASE, order(), tx())
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2"


def test_reset_forgets_everything(sandbox: AqiSandbox, receiver: Receiver) -> None:
    txid = tx()
    post(sandbox, BASE, order(), txid)
    result_of(receiver, txid)
    assert requests.post(sandbox.url + "/_sandbox/reset", timeout=5).status_code == 200
    assert (sandbox.transactions, sandbox.orders, sandbox.callbacks, sandbox.effects) == (
        {},
        {},
        {},
        [],
    )


# -- W / E items and DataSource ---------------------------------------------------------------


def test_every_notification_carries_the_sandbox_data_source(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    txid = tx()
    assert post(sandbox, BASE, order(), txid).status_code == 200
    result_of(receiver, txid)
    (note,) = receiver.for_tx(txid)
    assert note["parameters"]["DataSource"] == "PreProd"


def test_data_source_route_changes_it_and_empty_leaves_it_out(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    r = requests.post(sandbox.url + "/_sandbox/data-source", json={"value": "Prod"}, timeout=5)
    assert r.json() == {"data_source": "Prod"}
    first = tx()
    post(sandbox, BASE, order(), first)
    result_of(receiver, first)
    assert receiver.for_tx(first)[0]["parameters"]["DataSource"] == "Prod"
    requests.post(sandbox.url + "/_sandbox/data-source", json={"value": ""}, timeout=5)
    second = tx()
    post(sandbox, BASE, order(orderReference="ODE2024100077"), second)
    result_of(receiver, second)
    assert "DataSource" not in receiver.for_tx(second)[0]["parameters"]
    bad = requests.post(sandbox.url + "/_sandbox/data-source", json={"value": 1}, timeout=5)
    assert bad.status_code == 400


def test_too_long_non_critical_field_is_a_w_item_and_processed(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    data = order()
    data["billToAddress"]["street"] = "S" * 36
    txid = tx()
    post(sandbox, BASE, data, txid)
    details = result_of(receiver, txid)
    assert details["result"] == "OK"
    (item,) = details["errorDetails"]
    assert (item["fieldName"], item["status"], item["providedValue"]) == (
        "BILLTOSTREET",
        "W",
        "S" * 36,
    )
    assert "truncated" in item["ErrorDescription"]
    (effect,) = effects(sandbox, txid)
    assert effect["warnings"] == ["BILLTOSTREET"]


def test_warnings_result_option(receiver: Receiver) -> None:
    sb = start(receiver, warnings_result="ERROR_IN_FILE")
    try:
        data = order()
        data["items"][0]["description"] = "D" * 41
        txid = tx()
        post(sb, BASE, data, txid)
        details = result_of(receiver, txid)
        assert details["result"] == "ERROR_IN_FILE"
        assert [i["status"] for i in details["errorDetails"]] == ["W"]
        assert len(effects(sb, txid)) == 1  # processed all the same
    finally:
        sb.stop()


def test_too_long_critical_field_is_an_e_item_and_not_processed(
    sandbox: AqiSandbox, receiver: Receiver
) -> None:
    data = order()
    data["items"][1]["productId"] = "P" * 36
    data["shipToAddress"]["street"] = "S" * 40
    txid = tx()
    post(sandbox, BASE, data, txid)
    details = result_of(receiver, txid)
    assert details["result"] == "ERROR_IN_FILE"
    assert [(i["fieldName"], i["status"]) for i in details["errorDetails"]] == [
        ("LINEITEMPRODUCTID", "E"),
        ("SHIPTOSTREET", "W"),
    ]
    assert effects(sandbox, txid) == []


def test_bad_warnings_result_option_is_refused() -> None:
    with pytest.raises(ValueError, match="warnings_result"):
        AqiSandbox(warnings_result="MAYBE")
