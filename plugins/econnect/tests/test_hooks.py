"""The hooks one by one: provider_info, build_request's refusals, and the declared auth as
the core applies it (token URL, token fetch, headers: ``docrelay._auth`` on this plugin's
declaration, since the plugin has no token code of its own any more)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import docrelay_econnect as plugin
import pytest
from docrelay import (
    Context,
    Document,
    DocumentError,
    HttpRequest,
    HttpResponse,
    OutcomeError,
    OutcomeKind,
    Token,
)
from docrelay._auth import declared_headers, fetch_token, token_url
from docrelay.auth import OAuth2ClientCredentials
from docrelay_econnect._demo import sample

KEY = "0b5f3c8e-6d1a-5e2b-9f4c-3a7d2e1b0c9f"


class Services:
    """The engine's services for a context, without an engine: no HTTP is made here."""

    def __init__(self, responses: list[HttpResponse] | None = None) -> None:
        self.responses = responses or []
        self.sent: list[HttpRequest] = []
        self.secrets: set[str] = set()

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        return self.responses.pop(0)

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Token]) -> str:
        return fetch(ctx).value

    def find_documents(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[Any]:
        return []

    def register_secret(self, value: str) -> None:
        self.secrets.add(value)


def oauth() -> OAuth2ClientCredentials:
    (scheme,) = [a for a in plugin.provider_info().auth if isinstance(a, OAuth2ClientCredentials)]
    return scheme


def make_ctx(
    key: str | None = KEY,
    base_url: str = "http://127.0.0.1:8701",
    services: Services | None = None,
    **settings: Any,
) -> Context:
    info = plugin.provider_info()
    resolved = {s.name: s.default for s in info.settings}
    resolved.update({"client_id": "cid", "client_secret": "csecret", "party_id": "NL:KVK:12345678"})
    resolved.update(settings)
    return Context(
        provider=info,
        settings=resolved,
        base_url=base_url,
        environment=None,
        services=services or Services(),
        key=key,
    )


def invoice(kind: str = "invoice", payload: bytes | None = None, **meta: str) -> Document:
    return Document(
        id="inv-1",
        provider="econnect",
        payload=sample("invoice-INV-2024-0101.xml") if payload is None else payload,
        kind=kind,
        metadata=meta,
    )


def test_provider_info_declares_settings_and_secrets() -> None:
    info = plugin.provider_info()
    assert info.name == "econnect"
    assert info.environments["sandbox"] == "http://127.0.0.1:8701"
    assert info.environments["acceptance"] == "https://accp-psb.econnect.eu"
    assert info.environments["production"] == "https://psb.econnect.eu"
    assert info.idempotency == "key"
    assert info.max_payload_bytes == 10 * 1024 * 1024
    assert set(info.kinds) == {"invoice", "credit_note", "order"}
    secrets = {s.name for s in info.settings if s.secret}
    assert secrets == {"client_secret", "subscription_key"}
    required = {s.name for s in info.settings if s.required}
    assert required == {"client_id", "client_secret", "party_id"}
    defaults = {s.name: s.default for s in info.settings}
    assert defaults["scope"] == "ap"
    assert defaults["send_path"] == "/api/v1/{party_id}/salesInvoice/send"
    assert defaults["content_type"] == "application/xml"
    assert info.credential_setting == "client_id"


def test_build_request_raw_xml() -> None:
    req = plugin.build_request(invoice(), make_ctx())
    assert req is not None
    assert (req.method, req.url) == ("POST", "/api/v1/NL:KVK:12345678/salesInvoice/send")
    assert req.body == sample("invoice-INV-2024-0101.xml")
    assert plugin.provider_info().idempotency_header == "X-EConnect-DocumentId"  # ctx.key
    assert req.headers["Content-Type"] == "application/xml"


def test_build_request_quotes_the_party_and_passes_receiver_and_channel() -> None:
    doc = invoice(party_id="NL:KVK:1/2 3", receiver_id="0106:87654321", channel="peppol")
    req = plugin.build_request(doc, make_ctx())
    assert req is not None
    assert req.url == "/api/v1/NL:KVK:1%2F2%203/salesInvoice/send"
    assert dict(req.params) == {"receiverId": "0106:87654321", "channel": "peppol"}


def test_build_request_order_path_and_custom_template() -> None:
    doc = Document(
        id="po", provider="econnect", payload=sample("order-PO-2024-0420.xml"), kind="order"
    )
    req = plugin.build_request(doc, make_ctx(order_send_path="/api/v2/{party_id}/order"))
    assert req is not None
    assert req.url == "/api/v2/NL:KVK:12345678/order"


def test_build_request_multipart() -> None:
    req = plugin.build_request(invoice(), make_ctx(content_type="multipart/form-data"))
    assert req is not None
    ctype = req.headers["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("boundary=")[1]
    assert req.body.startswith(f"--{boundary}\r\n".encode())
    assert b'filename="INV-2024-0101.xml"' in req.body
    assert sample("invoice-INV-2024-0101.xml") in req.body


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("abc12", "at least 6"),
        ("inv@2024-0101", "'@'"),
        ("inv_2024_0101", "'_'"),
        ("inv 2024 0101", "' '"),
        ("inv.2024.0101", "'.'"),
        ("inv+2024+0101", "'[+]'"),
        ("inv:2024:0101", "':'"),
        ("inv/2024/0101", "'/'"),
        ("abc\u00e9def", "'\u00e9'"),
        ("INV-2024-0101", "invoice number"),
        ("inv-2024-0101", "invoice number"),
    ],
)
def test_invalid_document_id_is_refused_before_sending(key: str, why: str) -> None:
    with pytest.raises(DocumentError, match=why):
        plugin.build_request(invoice(), make_ctx(key=key))


def test_over_max_payload_bytes_is_refused_in_build_request() -> None:
    with pytest.raises(DocumentError, match="max_payload_bytes"):
        plugin.build_request(invoice(), make_ctx(max_payload_bytes=100))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(DocumentError, match="kind 'despatch_advice'"):
        plugin.build_request(invoice(kind="despatch_advice"), make_ctx())


def test_bad_path_template_is_a_config_error() -> None:
    with pytest.raises(OutcomeError) as info:
        plugin.build_request(invoice(), make_ctx(send_path="/api/v1/{partyId}/send"))
    assert info.value.outcome.kind == OutcomeKind.CONFIG_ERROR


def test_default_key_is_a_uuid_and_passes_validation() -> None:
    """No idempotency_key hook: the engine's default (a UUID5 per revision) is kept."""
    assert not hasattr(plugin, "idempotency_key")
    key = str(uuid.uuid5(uuid.NAMESPACE_URL, "econnect/inv-1/rev"))
    assert plugin.build_request(invoice(), make_ctx(key=key)) is not None


@pytest.mark.parametrize(
    ("base_url", "extra", "expected"),
    [
        ("http://127.0.0.1:8701", {}, "http://127.0.0.1:8701/connect/token"),
        ("https://accp-psb.econnect.eu", {}, "https://accp-identity.econnect.eu/connect/token"),
        ("https://psb.econnect.eu/", {}, "https://identity.econnect.eu/connect/token"),
        ("https://psb.econnect.eu", {"token_url": "https://id.example/t"}, "https://id.example/t"),
    ],
)
def test_token_url(base_url: str, extra: dict[str, Any], expected: str) -> None:
    assert token_url(make_ctx(base_url=base_url, **extra), oauth()) == expected


def _json(status: int, data: Any, **headers: str) -> HttpResponse:
    return HttpResponse(status=status, body=json.dumps(data).encode(), headers=headers)


def test_fetch_token_posts_client_credentials_and_registers_the_secret() -> None:
    services = Services(
        [_json(200, {"access_token": "tok", "expires_in": 3600, "token_type": "Bearer"})]
    )
    ctx = make_ctx(services=services)
    token = fetch_token(ctx, oauth())
    assert token.value == "tok"
    (sent,) = services.sent
    assert sent.url == "http://127.0.0.1:8701/connect/token"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = dict(x.split("=", 1) for x in sent.body.decode().split("&"))
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "csecret",
        "scope": "ap",
    }
    assert "csecret" in services.secrets


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (_json(400, {"error": "invalid_client"}), OutcomeKind.CONFIG_ERROR),
        (_json(401, {"error": "invalid_client"}), OutcomeKind.CONFIG_ERROR),
        (_json(400, {"error": "invalid_scope"}), OutcomeKind.CONFIG_ERROR),
        (_json(200, {"no": "token"}), OutcomeKind.CONFIG_ERROR),
        (HttpResponse(status=200, body=b"<html>login</html>"), OutcomeKind.CONFIG_ERROR),
        (_json(500, {"error": "server_error"}), OutcomeKind.RETRY),
        (HttpResponse(status=503, body=b""), OutcomeKind.RETRY),
        (_json(429, {}, **{"Retry-After": "2"}), OutcomeKind.THROTTLED),
    ],
)
def test_fetch_token_failures(response: HttpResponse, kind: OutcomeKind) -> None:
    with pytest.raises(OutcomeError) as info:
        fetch_token(make_ctx(services=Services([response])), oauth())
    assert info.value.outcome.kind == kind
    assert "csecret" not in str(info.value)


def test_declared_auth_adds_bearer_and_subscription_key() -> None:
    services = Services([_json(200, {"access_token": "tok-1", "expires_in": 3600})])
    ctx = make_ctx(services=services, subscription_key="sub-key")
    assert declared_headers(ctx) == {"Authorization": "Bearer tok-1", "Subscription-Key": "sub-key"}
    assert "sub-key" in services.secrets
    assert declared_headers(make_ctx(services=Services([_json(200, {"access_token": "t"})]))) == {
        "Authorization": "Bearer t"
    }  # no subscription key set: the legacy header is left out


@pytest.mark.parametrize("key", [None, "inv.2024.0101", "abc12"])
def test_build_request_checks_the_document_id_before_any_token_call(key: str | None) -> None:
    """The documentId (the core's idempotency header) is checked in build_request, which runs
    before the auth headers: never an unchecked value on the wire, no token call."""
    services = Services([])
    with pytest.raises(DocumentError, match="refused before sending"):
        plugin.build_request(invoice(), make_ctx(key=key, services=services))
    assert services.sent == []


def test_classify_hook_uses_the_key_as_reference_for_409() -> None:
    out = plugin.classify_response(HttpResponse(status=409), None, make_ctx())
    assert out is not None
    assert (out.kind, out.provider_ref) == (OutcomeKind.DUPLICATE, KEY)
