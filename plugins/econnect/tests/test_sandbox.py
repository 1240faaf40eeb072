"""The eConnect sandbox over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from docrelay_econnect._demo import sample
from docrelay_econnect.sandbox import EConnectSandbox

PARTY = "NL:KVK:12345678"
INVOICE = sample("invoice-INV-2024-0101.xml")
ORDER = sample("order-PO-2024-0420.xml")


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[EConnectSandbox]:
    """One server for the module (stopping one takes half a second)."""
    with EConnectSandbox(delivery_delay=0) as sb:
        assert isinstance(sb, EConnectSandbox)
        yield sb


@pytest.fixture
def sandbox(shared_sandbox: EConnectSandbox) -> EConnectSandbox:
    shared_sandbox.reset()
    shared_sandbox.set_faults([])
    return shared_sandbox


def token(sb: EConnectSandbox, **form: str) -> requests.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": sb.config["client_id"],
        "client_secret": sb.config["client_secret"],
        "scope": "ap",
        **form,
    }
    return requests.post(f"{sb.url}/connect/token", data=data, timeout=5)


def bearer(sb: EConnectSandbox) -> dict[str, str]:
    r = token(sb)
    assert r.status_code == 200
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def send(
    sb: EConnectSandbox,
    *,
    body: bytes = INVOICE,
    doc_id: str | None = None,
    party: str = PARTY,
    doctype: str = "salesInvoice",
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> requests.Response:
    h = {"Content-Type": "application/xml"}
    if auth:
        h.update(bearer(sb))
    if doc_id is not None:
        h["X-EConnect-DocumentId"] = doc_id
    h.update(headers or {})
    return requests.post(f"{sb.url}/api/v1/{party}/{doctype}/send", data=body, headers=h, timeout=5)


def assert_error_shape(r: requests.Response, status: int) -> dict[str, str]:
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"helpLink", "message", "code", "requestId", "dateTime"}
    assert body["code"] == f"API{status}"
    return body  # type: ignore[no-any-return]


def test_token_client_credentials(sandbox: EConnectSandbox) -> None:
    r = token(sandbox)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]


def test_token_honours_token_ttl_fault(sandbox: EConnectSandbox) -> None:
    sandbox.set_faults(["token-ttl:0.2"])
    r = token(sandbox)
    assert r.json()["expires_in"] == 0.2
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert send(sandbox, doc_id=str(uuid.uuid4()), headers=headers, auth=False).status_code == 200
    time.sleep(0.3)
    expired = send(sandbox, doc_id=str(uuid.uuid4()), headers=headers, auth=False)
    assert_error_shape(expired, 401)


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "someone-else"}, "invalid_client"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"scope": "admin"}, "invalid_scope"),
    ],
)
def test_token_refusals(sandbox: EConnectSandbox, form: dict[str, str], error: str) -> None:
    r = token(sandbox, **form)
    assert r.status_code == 400
    assert r.json() == {"error": error}


def test_token_endpoint_is_not_faultable(sandbox: EConnectSandbox) -> None:
    sandbox.set_faults(["error*1"])
    assert token(sandbox).status_code == 200
    assert send(sandbox, doc_id=str(uuid.uuid4())).status_code in (500, 503)


def test_send_first_time_200_then_409(sandbox: EConnectSandbox) -> None:
    doc_id = str(uuid.uuid4())
    first = send(sandbox, doc_id=doc_id)
    assert first.status_code == 200
    assert first.json() == {"id": doc_id}
    again = send(sandbox, body=b"<not even xml", doc_id=doc_id)
    body = assert_error_shape(again, 409)
    assert doc_id in body["message"]
    assert sandbox.effects == [
        {
            "kind": "invoice_received",
            "key": doc_id,
            "party": PARTY,
            "invoice_id": "INV-2024-0101",
            "at": sandbox.effects[0]["at"],
        }
    ]


def test_same_id_for_another_party_is_a_new_document(sandbox: EConnectSandbox) -> None:
    doc_id = str(uuid.uuid4())
    assert send(sandbox, doc_id=doc_id).status_code == 200
    assert send(sandbox, doc_id=doc_id, party="NL:KVK:87654321").status_code == 200
    assert len(sandbox.effects) == 2


def test_without_header_an_id_is_generated(sandbox: EConnectSandbox) -> None:
    a = send(sandbox)
    b = send(sandbox)
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] != b.json()["id"]
    uuid.UUID(a.json()["id"])
    assert len(sandbox.effects) == 2


def test_multipart_upload(sandbox: EConnectSandbox) -> None:
    doc_id = str(uuid.uuid4())
    r = requests.post(
        f"{sandbox.url}/api/v1/{PARTY}/salesInvoice/send",
        files={"file": ("INV-2024-0101.xml", INVOICE, "application/xml")},
        headers={**bearer(sandbox), "X-EConnect-DocumentId": doc_id},
        timeout=5,
    )
    assert r.status_code == 200
    assert r.json() == {"id": doc_id}
    record = sandbox.document(PARTY, doc_id)
    assert record is not None
    assert record["payload"] == INVOICE


def test_multipart_without_a_file_is_400(sandbox: EConnectSandbox) -> None:
    r = requests.post(
        f"{sandbox.url}/api/v1/{PARTY}/salesInvoice/send",
        data={"note": "no file"},
        files={"other": (None, "x")},
        headers=bearer(sandbox),
        timeout=5,
    )
    # `other` has a name but no filename: it is taken as the file, and it is not XML
    assert_error_shape(r, 400)
    assert sandbox.effects == []


def test_order_goes_to_purchase_order(sandbox: EConnectSandbox) -> None:
    doc_id = str(uuid.uuid4())
    assert send(sandbox, body=ORDER, doc_id=doc_id, doctype="purchaseOrder").status_code == 200
    assert sandbox.effects[0]["kind"] == "order_received"
    assert sandbox.effects[0]["order_id"] == "PO-2024-0420"
    wrong = send(sandbox, body=ORDER, doc_id=str(uuid.uuid4()), doctype="salesInvoice")
    assert "Order" in assert_error_shape(wrong, 400)["message"]


def test_401_without_or_with_a_bad_token(sandbox: EConnectSandbox) -> None:
    r = send(sandbox, doc_id=str(uuid.uuid4()), auth=False)
    assert_error_shape(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = send(sandbox, auth=False, headers={"Authorization": "Bearer sbx-forged"})
    assert_error_shape(r, 401)
    assert sandbox.effects == []


def test_403_for_a_party_not_linked_to_the_client(sandbox: EConnectSandbox) -> None:
    body = assert_error_shape(send(sandbox, party="NL:KVK:99999999"), 403)
    assert "NL:KVK:99999999" in body["message"]


def test_413_over_max_payload() -> None:
    with EConnectSandbox(max_payload=1000) as sb:
        assert isinstance(sb, EConnectSandbox)
        assert_error_shape(send(sb, doc_id=str(uuid.uuid4())), 413)
        assert sb.effects == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"this is not xml", "not XML"),
        (b"<Invoice><ID>1</ID></Invoice>", "not a UBL"),
        (INVOICE.replace(b"<cbc:ID>INV-2024-0101</cbc:ID>", b""), "cbc:ID"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', "not XML"),
    ],
)
def test_400_for_a_body_that_is_not_ubl(sandbox: EConnectSandbox, body: bytes, needle: str) -> None:
    r = send(sandbox, body=body, doc_id=str(uuid.uuid4()))
    assert needle in assert_error_shape(r, 400)["message"]
    assert sandbox.effects == []


@pytest.mark.parametrize(
    "doc_id",
    [
        "abc12",
        "inv@2024-0101",
        "inv_2024_0101",
        "has space",
        "inv.2024.0101",
        "inv+2024+0101",
        "inv:2024:0101",
        "inv#20240101",
        "inv~2024~0101",
    ],
)
def test_400_for_an_invalid_document_id(sandbox: EConnectSandbox, doc_id: str) -> None:
    r = send(sandbox, doc_id=doc_id)
    assert "X-EConnect-DocumentId" in assert_error_shape(r, 400)["message"]
    assert sandbox.effects == []


@pytest.mark.parametrize("doc_id", ["abcdef", "A1B2C3", "0b5f3c8e-6d1a-5e2b-9f4c-3a7d2e1b0c9f"])
def test_document_id_of_letters_digits_and_dashes_is_taken(
    sandbox: EConnectSandbox, doc_id: str
) -> None:
    r = send(sandbox, doc_id=doc_id)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": doc_id}


def test_status_history_and_404(sandbox: EConnectSandbox) -> None:
    doc_id = str(uuid.uuid4())
    assert send(sandbox, doc_id=doc_id).status_code == 200
    r = requests.get(
        f"{sandbox.url}/api/v1/{PARTY}/salesInvoice/{doc_id}/status",
        headers=bearer(sandbox),
        timeout=5,
    )
    assert r.status_code == 200
    assert [s["name"] for s in r.json()] == ["Accepted", "Sent"]
    assert set(r.json()[0]) == {"id", "name", "description", "createdOn"}
    missing = requests.get(
        f"{sandbox.url}/api/v1/{PARTY}/salesInvoice/{uuid.uuid4()}/status",
        headers=bearer(sandbox),
        timeout=5,
    )
    assert "not found" in assert_error_shape(missing, 404)["message"]


def test_status_moves_to_sent_after_the_delivery_delay() -> None:
    with EConnectSandbox(delivery_delay=0.1) as sb:
        assert isinstance(sb, EConnectSandbox)
        doc_id = str(uuid.uuid4())
        assert send(sb, doc_id=doc_id).status_code == 200
        record = sb.document(PARTY, doc_id)
        assert record is not None
        assert [s["name"] for s in record["statuses"]] == ["Accepted"]
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(record["statuses"]) < 2:
            time.sleep(0.02)
        assert [s["name"] for s in record["statuses"]] == ["Accepted", "Sent"]


def test_5xx_fault_uses_the_econnect_error_shape(sandbox: EConnectSandbox) -> None:
    sandbox.set_faults(["error*1:503"])
    doc_id = str(uuid.uuid4())
    assert_error_shape(send(sandbox, doc_id=doc_id), 503)
    assert sandbox.effects == []
    assert send(sandbox, doc_id=doc_id).status_code == 200


def test_drop_fault_processes_then_loses_the_answer(sandbox: EConnectSandbox) -> None:
    """The "lost response" mode: the client's resend with the same id gets 409."""
    sandbox.set_faults(["drop*1"])
    doc_id = str(uuid.uuid4())
    headers = bearer(sandbox)
    with pytest.raises(requests.ConnectionError):
        send(sandbox, doc_id=doc_id, headers=headers, auth=False)
    assert [e["key"] for e in sandbox.effects] == [doc_id]
    assert send(sandbox, doc_id=doc_id, headers=headers, auth=False).status_code == 409
    assert len(sandbox.effects) == 1


def test_subscription_key_when_required() -> None:
    with EConnectSandbox(require_subscription_key="true", delivery_delay=0) as sb:
        assert isinstance(sb, EConnectSandbox)
        assert_error_shape(send(sb, doc_id=str(uuid.uuid4())), 401)
        key = {"Subscription-Key": str(sb.config["subscription_key"])}
        assert send(sb, doc_id=str(uuid.uuid4()), headers=key).status_code == 200


def test_reset_forgets_documents(sandbox: EConnectSandbox) -> None:
    doc_id = str(uuid.uuid4())
    assert send(sandbox, doc_id=doc_id).status_code == 200
    sandbox.reset()
    assert sandbox.effects == []
    assert send(sandbox, doc_id=doc_id).status_code == 200


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown econnect sandbox option"):
        EConnectSandbox(nonsense=1)


def test_lose_answer_option_drops_only_the_first_send_of_that_invoice(
    sandbox: EConnectSandbox,
) -> None:
    sandbox.config["lose_answer"] = "INV-2024-0101"
    try:
        headers = bearer(sandbox)
        other = send(sandbox, body=ORDER, doctype="purchaseOrder", headers=headers, auth=False)
        assert other.status_code == 200
        doc_id = str(uuid.uuid4())
        with pytest.raises(requests.ConnectionError):
            send(sandbox, doc_id=doc_id, headers=headers, auth=False)
        assert send(sandbox, doc_id=doc_id, headers=headers, auth=False).status_code == 409
        fresh = send(sandbox, doc_id=str(uuid.uuid4()), headers=headers, auth=False)
        assert fresh.status_code == 200  # the same invoice number again: answered this time
        assert [e["kind"] for e in sandbox.effects] == [
            "order_received",
            "invoice_received",
            "invoice_received",
        ]
    finally:
        sandbox.config["lose_answer"] = ""


def test_unavailable_once_answers_503_before_processing(sandbox: EConnectSandbox) -> None:
    sandbox.config["unavailable_once"] = "INV-2024-0101"
    try:
        doc_id = str(uuid.uuid4())
        assert_error_shape(send(sandbox, doc_id=doc_id), 503)
        assert sandbox.effects == []
        assert send(sandbox, doc_id=doc_id).status_code == 200
        assert len(sandbox.effects) == 1
    finally:
        sandbox.config["unavailable_once"] = ""
