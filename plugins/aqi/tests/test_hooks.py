"""The AQI hooks one by one: keys, holds, requests and headers (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docrelay
import pytest
from docrelay import (
    ConfigError,
    Context,
    Document,
    DocumentError,
    DocumentView,
    HttpRequest,
    HttpResponse,
    OutcomeKind,
    Token,
)
from docrelay.auth import ApiKeyHeader
from docrelay_aqi import (
    AqiSandbox,
    build_request,
    classify_response,
    demo_batch,
    expected_data_source,
    hold,
    idempotency_key,
    parse_notification,
    provider_info,
    sample,
    sample_document,
)


class Services:
    def __init__(self, documents: list[DocumentView] | None = None) -> None:
        self.documents = documents or []
        self.secrets: list[str] = []

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        raise AssertionError("no HTTP expected")

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Token]) -> str:
        raise AssertionError("no token expected")

    def find_documents(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[DocumentView]:
        return [
            d
            for d in self.documents
            if d.provider == provider
            and (kind is None or d.kind == kind)
            and all(d.metadata.get(k) == v for k, v in metadata.items())
        ]

    def register_secret(self, value: str) -> None:
        self.secrets.append(value)


def ctx(
    services: Services | None = None, settings: dict[str, Any] | None = None, **kw: Any
) -> Context:
    return Context(
        provider=provider_info(),
        settings={"subscription_key": "k-123", **(settings or {})},
        base_url="http://127.0.0.1:8705",
        environment=None,
        services=services or Services(),
        **kw,
    )


def view(
    doc_id: str, kind: str, state: str, ref: str = "ODE2024100001", **meta: str
) -> DocumentView:
    return DocumentView(
        id=doc_id,
        provider="aqi",
        kind=kind,
        state=state,
        metadata={"order_reference": ref, **meta},
    )


ORDER = sample_document("o1", "order", "order")
INVOICE = sample_document("i1", "invoice", "invoice", order_ref="ODE2024100001")
RETURN = sample_document("r1", "return", "return", order_ref="ODE2024100001")


def test_provider_info() -> None:
    info = provider_info()
    assert info.name == "aqi"
    assert info.environments == {
        "sandbox": "http://127.0.0.1:8705",
        "uat": "https://api-uat.accounting.riverty.io",
        "production": "https://api.accounting.riverty.io",
    }
    assert (info.idempotency, info.async_validation) == ("key", "webhook")
    assert info.kinds == ("order", "invoice", "cancellation", "goodwill", "return", "payment")
    key = info.setting("subscription_key")
    assert key is not None
    assert key.secret
    assert key.required
    assert info.credential_setting == "subscription_key"
    assert info.hook_api == 2
    assert (info.sandbox, info.demo) == (AqiSandbox, demo_batch)


# -- idempotency key ----------------------------------------------------------------------------


def test_new_key_is_a_stable_hex_uuid() -> None:
    a = idempotency_key(ORDER, ctx())
    assert len(a) == 32
    assert int(a, 16) >= 0
    assert idempotency_key(ORDER, ctx()) == a


@pytest.mark.parametrize("previous", ["rejected", "failed", "held", "queued", "accepted", None])
def test_key_is_kept_until_the_provider_answered_ok(previous: str | None) -> None:
    c = ctx(previous_key="0a6b660174a3306898a924639688dffb", previous_state=previous)
    assert idempotency_key(ORDER, c) == "0a6b660174a3306898a924639688dffb"


@pytest.mark.parametrize("previous", ["delivered", "duplicate", "no_action"])
def test_key_is_new_after_ok(previous: str) -> None:
    c = ctx(previous_key="0a6b660174a3306898a924639688dffb", previous_state=previous)
    key = idempotency_key(ORDER, c)
    assert key != "0a6b660174a3306898a924639688dffb"
    assert len(key) == 32


def test_revision_changes_the_new_key() -> None:
    other = sample_document("o1", "order", "order", currency="CHF")
    assert idempotency_key(other, ctx()) != idempotency_key(ORDER, ctx())


# -- hold ---------------------------------------------------------------------------------------


def test_orders_never_wait() -> None:
    assert hold(ORDER, ctx()) is None


def test_follow_up_waits_for_an_unknown_order() -> None:
    assert hold(INVOICE, ctx()) == "order ODE2024100001 unknown to docrelay"


def test_hold_without_order_send() -> None:
    assert hold(INVOICE, ctx(settings={"hold_without_order": "send"})) is None


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("accepted", "waiting for order ODE2024100001 to be confirmed by AQI (now accepted)"),
        ("queued", "waiting for order ODE2024100001 to be confirmed by AQI (now queued)"),
        (
            "rejected",
            "waiting for order ODE2024100001: it was not confirmed by AQI (rejected); "
            "correct it first",
        ),
        ("delivered", None),
        ("duplicate", None),
    ],
)
def test_follow_up_waits_for_a_confirmed_order(state: str, reason: str | None) -> None:
    services = Services([view("o1", "order", state)])
    assert hold(INVOICE, ctx(services)) == reason


def test_an_order_of_another_customer_does_not_count() -> None:
    services = Services([view("o1", "order", "delivered", customer_number="SOMEONE-ELSE")])
    assert hold(INVOICE, ctx(services)) == "order ODE2024100001 unknown to docrelay"


def test_return_also_waits_for_an_invoice() -> None:
    services = Services([view("o1", "order", "delivered")])
    assert hold(RETURN, ctx(services)) == "an invoice of order ODE2024100001 unknown to docrelay"
    assert hold(RETURN, ctx(services, {"return_waits_for_invoice": False})) is None
    services.documents.append(view("i1", "invoice", "accepted"))
    assert hold(RETURN, ctx(services)) == (
        "waiting for an invoice of order ODE2024100001 to be confirmed by AQI (now accepted)"
    )
    services.documents.append(view("i2", "invoice", "delivered"))
    assert hold(RETURN, ctx(services)) is None


# -- build_request / prepare_headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "segment"),
    [
        ("invoice", "invoices"),
        ("cancellation", "cancellations"),
        ("goodwill", "goodwills"),
        ("return", "returns"),
        ("payment", "payments"),
    ],
)
def test_paths(kind: str, segment: str) -> None:
    doc = sample_document("d", kind, kind, order_ref="TFI2021072801_03")
    req = build_request(doc, ctx())
    assert req is not None
    assert req.method == "POST"
    assert req.url == (
        f"/accounting/v1/businesses/1000/customers/TFI2021072801/orders/TFI2021072801_03/{segment}"
    )
    assert req.body == doc.payload
    assert req.headers["Content-Type"] == "application/json"


def test_order_path_and_business_code_setting() -> None:
    doc = Document(
        id="o", provider="aqi", kind="order", content_type="application/json",
        payload=sample("order"), metadata={"customer_number": "C 1/2"},
    )  # fmt: skip
    req = build_request(doc, ctx(settings={"business_code": "2000"}))
    assert req is not None
    assert req.url == "/accounting/v1/businesses/2000/customers/C%201%2F2/orders"


def test_customer_and_order_from_the_payload() -> None:
    data = json.loads(sample("invoice"))
    data.update(customerNumber="C9", orderReference="ORD9")
    doc = Document(id="i", provider="aqi", kind="invoice", payload=json.dumps(data).encode())
    req = build_request(doc, ctx())
    assert req is not None
    assert req.url == "/accounting/v1/businesses/1000/customers/C9/orders/ORD9/invoices"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (Document(id="a", provider="aqi", kind="order", payload=b"[]",
                  metadata={"customer_number": "C"}), "not a JSON object"),
        (Document(id="b", provider="aqi", kind="invoice", payload=b"{}",
                  metadata={"customer_number": "C"}), "no order reference"),
        (Document(id="c", provider="aqi", kind="order", payload=b"{}"), "no customer number"),
        (Document(id="d", provider="aqi", kind="refund", payload=b"{}"), "no request type"),
    ],
)  # fmt: skip
def test_unsendable_documents(doc: Document, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        build_request(doc, ctx())


def test_the_key_and_the_transaction_id_are_declared_headers() -> None:
    """The core sends X-Subscription-Key (the secret setting, redacted everywhere) and the
    transactionId in X-Request-ID, set after every other header."""
    info = provider_info()
    assert info.auth == ApiKeyHeader("X-Subscription-Key", "subscription_key")
    assert (info.idempotency, info.idempotency_header) == ("key", "X-Request-ID")
    assert info.request_id_header == "X-Request-ID"
    req = build_request(ORDER, ctx(key="0a6b660174a3306898a924639688dffb"))
    assert set(req.headers) == {"Content-Type", "Accept"}


def test_missing_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="subscription_key"):
        docrelay.Relay(
            store=f"sqlite:///{tmp_path / 'd.db'}",
            providers={"aqi": {"base_url": "http://127.0.0.1:9"}},
        )


def test_settings_reach_the_classifier_and_parser() -> None:
    out = classify_response(
        HttpResponse(status=500, body=b"Schluessel abgelaufen"),
        None,
        ctx(settings={"bad_key_markers": ["schluessel", "expired"]}),
    )
    assert out is not None
    assert out.kind == OutcomeKind.CONFIG_ERROR
    body = {
        "type": "accounting/EDIErrorSent",
        "parameters": {
            "requestType": "GET_ORDER",
            "transactionId": "t1",
            "details": {
                "orderNo": "1",
                "result": "ERROR_IN_FILE",
                "errorDetails": [{"ErrorDescription": "Transaction t1 wurde bereits verarbeitet"}],
            },
        },
    }
    raw = json.dumps(body).encode()
    default = parse_notification(raw, {}, ctx())
    custom = parse_notification(raw, {}, ctx(settings={"duplicate_markers": ["bereits"]}))
    assert default is not None
    assert custom is not None
    assert (default.outcome.kind, custom.outcome.kind) == (
        OutcomeKind.REJECTED,
        OutcomeKind.DUPLICATE,
    )


# -- which DataSource this docrelay accepts ------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "base_url", "settings", "expected"),
    [
        (None, "http://127.0.0.1:8705", {}, "PreProd"),  # loopback: the sandbox
        ("uat", "https://api-uat.accounting.riverty.io", {}, "PreProd"),
        ("production", "https://api.accounting.riverty.io", {}, "Prod"),
        (None, "https://api.accounting.riverty.io/", {}, "Prod"),  # base_url = production's
        (None, "https://api-uat.accounting.riverty.io", {}, "PreProd"),
        (None, "https://aqi-proxy.example.com", {}, None),  # cannot tell
        (None, "https://aqi-proxy.example.com", {"data_source": "Prod"}, "Prod"),
        ("production", "https://x.example.com", {"data_sources": {"production": "Live"}}, "Live"),
        ("uat", "https://x.example.com", {"data_sources": "uat=Test, production=Prod"}, "Test"),
        ("other", "https://x.example.com", {}, None),
    ],
)
def test_expected_data_source_follows_the_environment(
    environment: str | None, base_url: str, settings: dict[str, Any], expected: str | None
) -> None:
    c = Context(
        provider=provider_info(),
        settings={"subscription_key": "k-123", **settings},
        base_url=base_url,
        environment=environment,
        services=Services(),
    )
    assert expected_data_source(c) == expected


def test_bad_data_sources_setting_is_a_one_line_value_error() -> None:
    c = Context(
        provider=provider_info(),
        settings={"subscription_key": "k-123", "data_sources": "uat:PreProd"},
        base_url="https://api-uat.accounting.riverty.io",
        environment="uat",
        services=Services(),
    )
    with pytest.raises(ValueError, match="is not ENVIRONMENT=DATASOURCE"):
        expected_data_source(c)
