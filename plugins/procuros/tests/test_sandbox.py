"""The Procuros sandbox over real HTTP on 127.0.0.1; every answer checked against the OpenAPI
description of the real API (tests/data/procuros-openapi-v2.yaml)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from docrelay import Document
from docrelay_procuros import build_body
from docrelay_procuros._demo import sample
from docrelay_procuros._transactions import TRANSACTION_STATUSES, TRANSACTION_TYPES, TYPES
from docrelay_procuros.sandbox import ProcurosSandbox

TOKEN = "procuros-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TX = "/v2/transactions"


def order_body() -> dict[str, Any]:
    return {"type": "ORDER", "content": json.loads(sample("order.json"))}


def invoice_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(sample("invoice.json"))
    return body


def post(sb: ProcurosSandbox, path: str, body: Any, headers: Any = None) -> requests.Response:
    return requests.post(
        sb.url + path,
        data=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)},
        timeout=5,
    )


def received(sb: ProcurosSandbox) -> list[dict[str, Any]]:
    return [e for e in sb.effects if e["kind"] == "transaction_received"]


# -- the spec copy and the shared tables ---------------------------------------------------------


def test_type_table_matches_the_spec(validators: Any) -> None:
    schemas = validators.spec()["components"]["schemas"]
    assert list(TRANSACTION_TYPES) == schemas["TransactionType"]["enum"]
    names = {
        "ORDER": "Order",
        "ORDER_RESPONSE": "OrderResponse",
        "SHIPPING_NOTICE": "ShippingNotice",
        "INVOICE": "Invoice",
        "CREDIT_NOTE": "CreditNote",
        "DISPATCH_INSTRUCTION": "DispatchInstruction",
        "DISPATCH_INSTRUCTION_RESPONSE": "DispatchInstructionResponse",
        "RECEIVAL_NOTICE": "ReceivalNotice",
        "REMITTANCE_ADVICE": "RemittanceAdvice",
        "PRODUCT_CATALOG": "ProductCatalog",
        "INVENTORY_REPORT": "InventoryReport",
        "SALES_REPORT": "SalesReport",
    }
    for type_, name in names.items():
        content = schemas[name]
        header = schemas[content["properties"]["header"]["$ref"].rsplit("/", 1)[-1]]
        spec_ = TYPES[type_]
        assert set(spec_.required) == set(content["required"]), type_
        assert set(spec_.header_required) == set(header["required"]), type_
        for party in (spec_.sender, spec_.receiver):
            assert party in header["properties"], (type_, party)
        if spec_.number_field is not None:
            assert spec_.number_field in header["properties"], type_


def test_spec_copy_is_the_shared_one() -> None:
    """When the project's shared/ sits beside the repository, the copy must not drift."""
    here = Path(__file__).resolve().parent / "data" / "procuros-openapi-v2.yaml"
    shared = Path(__file__).resolve().parents[4] / "shared" / "specs" / here.name
    if not shared.exists():
        pytest.skip("no shared/specs beside the repository (a clean clone)")
    assert here.read_bytes() == shared.read_bytes()


@pytest.mark.parametrize("name", ["order.json", "order-unknown-supplier.json"])
def test_sample_orders_build_conforming_requests(name: str, validators: Any) -> None:
    doc = Document(id="d1", provider="procuros", payload=sample(name), kind="order")
    body = build_body(doc)
    assert body["type"] == "ORDER"
    if name == "order.json":
        validators.request(TX, "POST", body)
    else:  # the rejected demo order lacks its order number on purpose
        errors = validators.errors({"$ref": "#/components/schemas/SentTransaction"}, body)
        assert errors == ["content/header: 'orderIdentifier' is a required property"]


def test_sample_invoice_is_a_whole_conforming_body(validators: Any) -> None:
    doc = Document(id="d1", provider="procuros", payload=sample("invoice.json"), kind="invoice")
    body = build_body(doc)
    assert body == invoice_body()
    validators.request(TX, "POST", body)


# -- auth and ping ---------------------------------------------------------------------------------


def test_ping_needs_the_token(sandbox: ProcurosSandbox, validators: Any) -> None:
    ok = requests.get(sandbox.url + "/v2/ping", headers=AUTH, timeout=5)
    assert ok.status_code == 204
    assert ok.content == b""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = requests.get(sandbox.url + "/v2/ping", headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.json()["message"] == "Unauthenticated."
        validators.response("/v2/ping", "GET", 401, r.json())


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", TX), ("POST", "/v2/errors"), ("GET", "/v2/all-transactions")],
)
def test_every_route_needs_the_token(
    sandbox: ProcurosSandbox, validators: Any, method: str, path: str
) -> None:
    r = requests.request(method, sandbox.url + path, json=order_body(), timeout=5)
    assert r.status_code == 401
    validators.response(path, method, 401, r.json())
    assert received(sandbox) == []


def test_unknown_route_is_404_in_the_client_error_shape(
    sandbox: ProcurosSandbox, validators: Any
) -> None:
    r = requests.post(sandbox.url + "/v2/transaction", headers=AUTH, json={}, timeout=5)
    assert r.status_code == 404
    validators.response(TX, "POST", 404, r.json())
    unauth = requests.post(sandbox.url + "/v2/transaction", json={}, timeout=5)
    assert unauth.status_code == 401


# -- POST /v2/transactions -------------------------------------------------------------------------


def test_201_records_one_effect(sandbox: ProcurosSandbox, validators: Any) -> None:
    r = post(sandbox, TX, order_body())
    assert r.status_code == 201, r.text
    validators.response(TX, "POST", 201, r.json())
    tx_id = r.json()["procurosTransactionId"]
    effects = received(sandbox)
    assert [e["key"] for e in effects] == [tx_id]
    assert effects[0]["type"] == "ORDER"
    assert effects[0]["document_number"] == "PO-2024-10417"
    assert effects[0]["receiver"] == "4098765000002"
    assert effects[0]["forwarded"] is True


def test_second_identical_payload_is_payload_already_received(
    sandbox: ProcurosSandbox, validators: Any
) -> None:
    assert post(sandbox, TX, order_body()).status_code == 201
    again = post(sandbox, TX, order_body())
    assert again.status_code == 400
    assert again.json()["message"] == "Payload already received"
    assert again.json()["errorUrl"].startswith(sandbox.url + "/portal/errors/")
    validators.response(TX, "POST", 400, again.json())
    assert len(received(sandbox)) == 1


def test_hash_key_ignores_key_order_but_not_content(sandbox: ProcurosSandbox) -> None:
    body = order_body()
    reordered = {"content": body["content"], "type": "ORDER"}
    assert post(sandbox, TX, body).status_code == 201
    assert post(sandbox, TX, reordered).status_code == 400
    changed = copy.deepcopy(body)
    changed["content"]["items"][0]["quantity"] = 121
    assert post(sandbox, TX, changed).status_code == 201
    assert len(received(sandbox)) == 2


def test_document_number_key(sandbox_factory: Callable[..., ProcurosSandbox]) -> None:
    sb = sandbox_factory(duplicate_key="document_number")
    body = order_body()
    assert post(sb, TX, body).status_code == 201
    changed = copy.deepcopy(body)
    changed["content"]["items"][0]["quantity"] = 121
    r = post(sb, TX, changed)
    assert r.status_code == 400
    assert r.json()["message"] == "Payload already received"
    other = copy.deepcopy(body)
    other["content"]["header"]["orderIdentifier"] = "PO-2024-10419"
    assert post(sb, TX, other).status_code == 201


def test_bad_duplicate_key_option_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_key"):
        ProcurosSandbox(duplicate_key="number")


def test_duplicate_message_option(sandbox_factory: Callable[..., ProcurosSandbox]) -> None:
    sb = sandbox_factory(duplicate_message="Transaction already exists")
    post(sb, TX, order_body())
    assert post(sb, TX, order_body()).json()["message"] == "Transaction already exists"


def test_inactive_relationship_is_202_and_still_taken_in(
    sandbox_factory: Callable[..., ProcurosSandbox], validators: Any
) -> None:
    sb = sandbox_factory(inactive_receivers="4011111000005, 4000000000000")
    r = post(sb, TX, invoice_body())
    assert r.status_code == 202
    assert r.json() == {"message": "Trade relationship not yet active."}
    validators.response(TX, "POST", 202, r.json())
    effects = received(sb)
    assert len(effects) == 1
    assert effects[0]["forwarded"] is False
    # the same valid payload to an active partner is forwarded
    assert post(sb, TX, order_body()).status_code == 201
    # a NO_ACTION payload is known too
    assert post(sb, TX, invoice_body()).status_code == 400
    assert len(received(sb)) == 2


def test_inactive_type_is_202(sandbox_factory: Callable[..., ProcurosSandbox]) -> None:
    sb = sandbox_factory(inactive_types=["INVOICE"])
    assert post(sb, TX, invoice_body()).status_code == 202
    assert post(sb, TX, order_body()).status_code == 201


def test_invalid_type_is_422(sandbox: ProcurosSandbox, validators: Any) -> None:
    r = post(sandbox, TX, {"type": "PAYMENT_ADVICE", "content": {"header": {}}})
    assert r.status_code == 422
    data = r.json()
    assert data["message"] == "The given data was invalid."
    assert data["errors"] == {"type": ['Transaction type "PAYMENT_ADVICE" is not valid']}
    assert data["errorUrl"].startswith(sandbox.url + "/portal/errors/")
    validators.response(TX, "POST", 422, data)
    assert received(sandbox) == []


def test_missing_party_identifiers_and_number_are_422(
    sandbox: ProcurosSandbox, validators: Any
) -> None:
    body = order_body()
    body["content"]["header"]["buyer"]["identifiers"] = []
    del body["content"]["header"]["supplier"]
    del body["content"]["header"]["orderIdentifier"]
    r = post(sandbox, TX, body)
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert set(errors) == {
        "content.header.buyer.identifiers",
        "content.header.supplier",
        "content.header.orderIdentifier",
    }
    validators.response(TX, "POST", 422, r.json())
    # a rejected payload is not registered: once corrected it goes through
    assert post(sandbox, TX, order_body()).status_code == 201


@pytest.mark.parametrize("type_", TRANSACTION_TYPES)
def test_every_type_requires_its_header(sandbox: ProcurosSandbox, type_: str) -> None:
    r = post(sandbox, TX, {"type": type_, "content": {"header": {}}})
    assert r.status_code == 422
    errors = r.json()["errors"]
    for field in TYPES[type_].header_required:
        assert f"content.header.{field}" in errors
    for field in TYPES[type_].required:
        if field != "header":
            assert f"content.{field}" in errors


def test_unknown_party_is_422(
    sandbox_factory: Callable[..., ProcurosSandbox], validators: Any
) -> None:
    sb = sandbox_factory(unknown_parties=["4099999000001"])
    body = {"type": "ORDER", "content": json.loads(sample("order-unknown-supplier.json"))}
    r = post(sb, TX, body)
    assert r.status_code == 422
    assert r.json()["errors"] == {
        "content.header.orderIdentifier": ["The content.header.orderIdentifier field is required."],
        "supplier": ["Could not resolve party using provided identifiers"],
    }
    validators.response(TX, "POST", 422, r.json())
    portal = requests.get(r.json()["errorUrl"], timeout=5)
    assert portal.status_code == 200
    assert portal.json()["errors"] == r.json()["errors"]


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"x"', b"null"])
def test_malformed_bodies(sandbox: ProcurosSandbox, validators: Any, raw: bytes) -> None:
    r = post(sandbox, TX, raw)
    assert r.status_code in (400, 422)
    validators.response(TX, "POST", r.status_code, r.json())


# -- faults ------------------------------------------------------------------------------------


def test_throttle_fault_is_429_in_the_spec_shape(sandbox: ProcurosSandbox, validators: Any) -> None:
    sandbox.set_faults(["throttle*1:none", "throttle*1:3"])
    first = post(sandbox, TX, order_body())
    assert first.status_code == 429
    assert "Retry-After" not in first.headers
    validators.response(TX, "POST", 429, first.json())
    second = post(sandbox, TX, order_body())
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "3"
    assert received(sandbox) == []
    assert post(sandbox, TX, order_body()).status_code == 201


@pytest.mark.parametrize("status", [500, 502, 503])
def test_error_fault_is_5xx_in_the_spec_shape(
    sandbox: ProcurosSandbox, validators: Any, status: int
) -> None:
    sandbox.set_faults([f"error*1:{status}"])
    r = post(sandbox, TX, order_body())
    assert r.status_code == status
    validators.response(TX, "POST", status, r.json())
    assert received(sandbox) == []


def test_drop_fault_takes_the_payload_in(sandbox: ProcurosSandbox) -> None:
    sandbox.set_faults(["drop*1"])
    with pytest.raises(requests.ConnectionError):
        post(sandbox, TX, order_body())
    assert len(received(sandbox)) == 1
    assert post(sandbox, TX, order_body()).json()["message"] == "Payload already received"


# -- POST /v2/errors -----------------------------------------------------------------------------


def test_report_error_201(sandbox: ProcurosSandbox, validators: Any) -> None:
    report = {
        "errorReason": "Could not resolve party using provided identifiers",
        "errorType": "DATA",
        "errorContext": {"docrelayDocumentId": "PO-2024-10418"},
        "transactionIdentifier": "PO-2024-10418",
        "transactionType": "ORDER",
    }
    validators.request("/v2/errors", "POST", report)
    r = post(sandbox, "/v2/errors", report)
    assert r.status_code == 201
    assert r.json()["message"] == "OK."
    validators.response("/v2/errors", "POST", 201, r.json())
    assert len(sandbox.reported_errors) == 1
    rec = sandbox.reported_errors[0]
    assert rec["errorType"] == "DATA"
    assert rec["transactionIdentifier"] == "PO-2024-10418"
    assert rec["errorUrl"] == r.json()["errorUrl"]
    over_http = requests.get(sandbox.url + "/_sandbox/reported-errors", timeout=5).json()
    assert over_http["errors"][0]["transactionIdentifier"] == "PO-2024-10418"
    assert received(sandbox) == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"errorReason", "errorType"}),
        ({"errorReason": "x"}, {"errorType"}),
        ({"errorType": "DATA"}, {"errorReason"}),
        ({"errorReason": "x", "errorType": "FATAL"}, {"errorType"}),
        ({"errorReason": "x", "errorType": "DATA", "errorContext": {"a": 1}}, {"errorContext"}),
        ({"errorReason": "x", "errorType": "DATA", "transactionType": "X"}, {"transactionType"}),
    ],
)
def test_report_error_422(
    sandbox: ProcurosSandbox, validators: Any, body: dict[str, Any], fields: set[str]
) -> None:
    r = post(sandbox, "/v2/errors", body)
    assert r.status_code == 422
    assert set(r.json()["errors"]) == fields
    validators.response("/v2/errors", "POST", 422, r.json())
    assert sandbox.reported_errors == []


# -- GET /v2/all-transactions ----------------------------------------------------------------


def test_all_transactions_pages_and_filters(sandbox: ProcurosSandbox, validators: Any) -> None:
    bodies = []
    for i in range(3):
        b = order_body()
        b["content"]["header"]["orderIdentifier"] = f"PO-{i}"
        bodies.append(b)
        assert post(sandbox, TX, b).status_code == 201
    assert post(sandbox, TX, invoice_body()).status_code == 201
    url = sandbox.url + "/v2/all-transactions"
    page = requests.get(url, headers=AUTH, params={"per_page": "2"}, timeout=5).json()
    assert page["count"] == 2
    assert page["hasMore"] is True
    # Transaction.content is a oneOf that the typed samples satisfy more than once (the
    # schemas do not forbid extra fields), so check each item against its own type's schema.
    schema = validators.response_schema("/v2/all-transactions", "GET", 200)
    envelope = copy.deepcopy(schema)
    envelope["properties"]["items"] = {"type": "array"}
    assert validators.errors(envelope, page) == []
    for item in page["items"]:
        tx = {**item, "content": {}}
        assert validators.errors({"$ref": "#/components/schemas/Transaction"}, tx) == [
            "content: {} is not valid under any of the given schemas"
        ]
        validators.request(TX, "POST", {"type": item["type"], "content": item["content"]})
    rest = requests.get(page["nextPageUrl"], headers=AUTH, timeout=5).json()
    assert rest["count"] == 2
    assert rest["hasMore"] is False
    assert rest["nextCursor"] is None
    assert validators.errors(envelope, rest) == []
    invoices = requests.get(url, headers=AUTH, params={"filter[type]": "INVOICE"}, timeout=5).json()
    assert [i["type"] for i in invoices["items"]] == ["INVOICE"]
    one = requests.get(
        f"{url}/{invoices['items'][0]['procurosTransactionId']}", headers=AUTH, timeout=5
    )
    assert one.status_code == 200
    assert one.json()["data"]["type"] == "INVOICE"
    missing = requests.get(f"{url}/nope", headers=AUTH, timeout=5)
    assert missing.status_code == 404
    bad = requests.get(url, headers=AUTH, params={"per_page": "0"}, timeout=5)
    assert bad.status_code == 422


def test_reset_forgets_everything(sandbox: ProcurosSandbox) -> None:
    post(sandbox, TX, order_body())
    post(sandbox, "/v2/errors", {"errorReason": "x", "errorType": "INTERNAL"})
    sandbox.reset()
    assert sandbox.effects == []
    assert sandbox.reported_errors == []
    assert sandbox.transactions == []
    assert post(sandbox, TX, order_body()).status_code == 201


# -- GET /v2/all-transactions: the lookup of sent transactions -----------------------------------


def list_params_errors(validators: Any, params: dict[str, str]) -> list[str]:
    """Every query parameter checked against the spec's parameters of List All Transactions."""
    spec_params = {
        p["name"]: p
        for p in validators.spec()["paths"]["/v2/all-transactions"]["get"]["parameters"]
    }
    errors = []
    for name, value in params.items():
        if name not in spec_params:
            errors.append(f"{name}: not a parameter of v2_list_all_transactions")
            continue
        schema = spec_params[name]["schema"]
        typed: Any = int(value) if schema.get("type") == "integer" and value.isdigit() else value
        errors += [f"{name}: {e}" for e in validators.errors(schema, typed)]
    return errors


def test_all_transactions_filters_of_the_spec(
    sandbox_factory: Callable[..., ProcurosSandbox], validators: Any
) -> None:
    sb = sandbox_factory(inactive_receivers=["4011111000005"])
    assert post(sb, TX, order_body()).status_code == 201
    assert post(sb, TX, invoice_body()).status_code == 202
    url = sb.url + "/v2/all-transactions"
    today = sb.transactions[0]["createdAt"][:10]
    cases = [
        ({"filter[status]": "DROPPED"}, ["INVOICE"]),
        ({"filter[status]": "PENDING"}, ["ORDER"]),
        ({"filter[flow]": "LIVE"}, ["ORDER", "INVOICE"]),
        ({"filter[flow]": "TEST"}, []),
        ({"filter[created_between]": f"{today},{today}"}, ["ORDER", "INVOICE"]),
        ({"filter[created_between]": "2020-01-01,2020-01-31"}, []),
        ({"filter[type]": "ORDER", "filter[status]": "PENDING"}, ["ORDER"]),
    ]
    schema = validators.response_schema("/v2/all-transactions", "GET", 200)
    envelope = copy.deepcopy(schema)
    envelope["properties"]["items"] = {"type": "array"}
    for params, types in cases:
        assert list_params_errors(validators, params) == []
        r = requests.get(url, headers=AUTH, params=params, timeout=5)
        assert r.status_code == 200, (params, r.text)
        assert validators.errors(envelope, r.json()) == []
        assert [i["type"] for i in r.json()["items"]] == types, params
        for item in r.json()["items"]:
            tx = {**item, "content": {}}
            assert validators.errors({"$ref": "#/components/schemas/Transaction"}, tx) == [
                "content: {} is not valid under any of the given schemas"
            ]


@pytest.mark.parametrize(
    "params",
    [
        {"filter[status]": "LOST"},
        {"filter[flow]": "DEMO"},
        {"filter[type]": "PAYMENT"},
        {"filter[created_between]": "2024-01-01"},
        {"filter[created_between]": "2024-13-01,2024-01-31"},
    ],
)
def test_all_transactions_bad_filters_are_422(
    sandbox: ProcurosSandbox, validators: Any, params: dict[str, str]
) -> None:
    r = requests.get(sandbox.url + "/v2/all-transactions", headers=AUTH, params=params, timeout=5)
    assert r.status_code == 422
    validators.response("/v2/all-transactions", "GET", 422, r.json())


def test_forwarded_status_option(sandbox_factory: Callable[..., ProcurosSandbox]) -> None:
    sb = sandbox_factory(forwarded_status="SUCCESS")
    post(sb, TX, order_body())
    assert [t["status"] for t in sb.transactions] == ["SUCCESS"]
    with pytest.raises(ValueError, match="forwarded_status"):
        ProcurosSandbox(forwarded_status="SENT")


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_list_status_option_fails_the_lookup_in_the_spec_shape(
    sandbox_factory: Callable[..., ProcurosSandbox], validators: Any, status: int
) -> None:
    sb = sandbox_factory(list_status=status)
    assert post(sb, TX, order_body()).status_code == 201  # sending is not affected
    for path in (
        "/v2/all-transactions",
        f"/v2/all-transactions/{sb.transactions[0]['procurosTransactionId']}",
    ):
        r = requests.get(sb.url + path, headers=AUTH, timeout=5)
        assert r.status_code == status
        spec_path = (
            "/v2/all-transactions"
            if path.count("/") == 2
            else "/v2/all-transactions/{procurosTransactionId}"
        )
        validators.response(spec_path, "GET", status, r.json())


def test_lookups_are_recorded(sandbox: ProcurosSandbox) -> None:
    requests.get(
        sandbox.url + "/v2/all-transactions",
        headers=AUTH,
        params={"filter[type]": "ORDER", "per_page": "100"},
        timeout=5,
    )
    assert sandbox.lookups == [{"filter[type]": "ORDER", "per_page": "100"}]


def test_transaction_statuses_match_the_spec(validators: Any) -> None:
    schemas = validators.spec()["components"]["schemas"]
    assert list(TRANSACTION_STATUSES) == schemas["TransactionStatus"]["enum"]
