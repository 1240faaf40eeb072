"""The plugin's hooks against the sandbox over real HTTP, without the engine.

A small real-HTTP stand-in for the engine's services (requests to 127.0.0.1, no mocks; the
declared ``ApiKeyHeader`` auth added as the core adds it) lets build_request,
classify_response and poll_status run end to end. What the core itself sends is checked
through a ``Relay`` at the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

import docrelay_ebh as ebh
import pytest
import requests
from docrelay import (
    ConfigError,
    Context,
    DocState,
    Document,
    DocumentError,
    DocumentView,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    Relay,
    Token,
    TransportError,
    TransportFailure,
)
from docrelay.auth import ApiKeyHeader
from docrelay.testing import FAST_ENGINE
from docrelay.testing import classify as classify_in_core
from docrelay_ebh.sandbox import EbhSandbox

KEY = "sandbox-provider-key"


class RealHttp:
    """The services a Context needs, doing real HTTP with requests."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.sent: list[HttpRequest] = []

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        try:
            r = requests.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                params=dict(request.params),
                timeout=5,
            )
        except requests.ConnectionError as exc:
            raise TransportFailure(
                TransportError(kind="connect", message=str(exc), sent=False)
            ) from exc
        return HttpResponse(
            status=r.status_code, headers=dict(r.headers), body=r.content, url=r.url
        )

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Token]) -> str:
        raise NotImplementedError

    def find_documents(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[DocumentView]:
        return []

    def register_secret(self, value: str) -> None:
        self.secrets.append(value)

    def auth_headers(self, ctx: Context, request: HttpRequest) -> dict[str, str]:
        """The declared ``ApiKeyHeader`` schemes, as the core applies them."""
        headers = {}
        for scheme in ctx.provider.auth:
            value = str(ctx.setting(scheme.setting) or "").strip()
            if value:
                headers[scheme.header] = value
            elif not scheme.optional:
                raise OutcomeError(Outcome(kind=OutcomeKind.CONFIG_ERROR, message="not set"))
        return headers

    def get_document(self, provider: str, doc_id: str) -> DocumentView | None:
        return None


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


def make_ctx(sb: EbhSandbox, *, services: RealHttp | None = None, **settings: Any) -> Context:
    base_url = settings.pop("base_url", sb.url)
    base = {"producer_id": "P1", "provider_key": KEY, "username": "robot"}
    base.update(settings)
    return Context(
        provider=ebh.provider_info(),
        settings=base,
        base_url=base_url,
        environment=None,
        services=services or RealHttp(),
        key="k-1",
    )


def sample(name: str) -> bytes:
    return resources.files("docrelay_ebh").joinpath("samples", name).read_bytes()


def doc(name: str = "ubf_invoice_ok.xml", **metadata: str) -> Document:
    return Document(
        id="inv-1", provider="ebh", payload=sample(name), kind="invoice", metadata=metadata
    )


def send(ctx: Context, document: Document) -> Outcome:
    """Do what the engine does for one send: build, add the auth headers, POST, classify
    (the plugin's classifier keeps the state; the outcome is the one the engine records)."""
    request = ebh.build_request(document, ctx)
    request = request.with_headers(ctx.auth_headers(request))
    services: RealHttp = ctx._services  # type: ignore[assignment]
    response = services.http(ctx, attrs_evolve_url(request, ctx))
    ebh.classify_response(response, None, ctx)
    return classify_in_core(ebh, response, settings=ctx.settings)


def attrs_evolve_url(request: HttpRequest, ctx: Context) -> HttpRequest:
    return HttpRequest(
        method=request.method, url=ctx.url(request.url), body=request.body, headers=request.headers
    )


def test_headers_and_secret(sandbox: EbhSandbox, tmp_path: Any) -> None:
    """ProducerId, ProviderKey (registered secret), Username, Accept on the POST and the GET
    (the auth declared, the core sends it); the POST adds Content-Type and InvoiceType."""
    assert ebh.provider_info().auth == (
        ApiKeyHeader("ProducerId", "producer_id"),
        ApiKeyHeader("ProviderKey", "provider_key"),
        ApiKeyHeader("Username", "username", optional=True),
    )
    request = ebh.build_request(doc(), make_ctx(sandbox))
    assert request.headers == {
        "Content-Type": "application/xml",
        "InvoiceType": "MultipleInvoiceUBF",
        "Accept": "application/json",
    }
    assert request.url == "/ebh/validations/v2/ValidationRequest"
    assert KEY not in request.summary()
    sandbox.set_option("polls_until_done", 0)
    settings = {"base_url": sandbox.url, "producer_id": "P1", "provider_key": KEY,
                "username": "robot"}  # fmt: skip
    with Relay(f"sqlite:///{tmp_path / 'h.db'}", providers={"ebh": settings},
               engine=FAST_ENGINE) as relay:  # fmt: skip
        relay.submit(doc())
        relay.run_until_settled(timeout=10)
        assert relay.status("inv-1").state == DocState.DELIVERED
        records = repr(relay.status("inv-1").to_dict()) + repr(relay.history("inv-1"))
    post, get = sandbox.requests[0], sandbox.requests[-1]
    assert (post["method"], get["method"]) == ("POST", "GET")
    for seen in (post, get):
        # The sandbox masks the key in its log; it took it (the document was delivered).
        got = {k: seen["headers"].get(k) for k in ("ProducerId", "ProviderKey", "Username")}
        assert got == {"ProducerId": "P1", "ProviderKey": "***", "Username": "robot"}
        assert seen["headers"].get("Accept") == "application/json"
    assert KEY not in records


@pytest.mark.parametrize(
    ("style", "version", "path"),
    [
        ("new", "v2", "/ebh/validations/v2/ValidationRequest"),
        ("new", "v1", "/ebh/validations/v1/ValidationRequest"),
        ("old", "v2", "/validations/api/v2/ValidationRequest"),
        ("OLD", "V1", "/validations/api/v1/ValidationRequest"),
    ],
)
def test_url_styles_and_versions(sandbox: EbhSandbox, style: str, version: str, path: str) -> None:
    ctx = make_ctx(sandbox, url_style=style, api_version=version)
    assert ebh.build_request(doc(), ctx).url == path
    outcome = send(ctx, doc())
    assert outcome.kind == OutcomeKind.ACCEPTED
    assert ctx.state["validation_path"] == path


@pytest.mark.parametrize(("name", "value"), [("url_style", "newest"), ("api_version", "v3")])
def test_bad_url_settings_are_config_errors(sandbox: EbhSandbox, name: str, value: str) -> None:
    overrides: dict[str, Any] = {name: value}
    ctx = make_ctx(sandbox, **overrides)
    with pytest.raises(OutcomeError) as info:
        ebh.build_request(doc(), ctx)
    assert info.value.outcome.kind == OutcomeKind.CONFIG_ERROR


def test_invoice_type_metadata_and_setting(sandbox: EbhSandbox) -> None:
    ctx = make_ctx(sandbox, invoice_type="ESF")
    assert ebh.build_request(doc(), ctx).headers["InvoiceType"] == "ESF"
    d = doc(invoice_type="TimeEntryInvoice")
    assert ebh.build_request(d, ctx).headers["InvoiceType"] == "TimeEntryInvoice"
    with pytest.raises(DocumentError):
        ebh.build_request(doc(invoice_type="UBF"), ctx)
    with pytest.raises(OutcomeError):
        ebh.build_request(doc(), make_ctx(sandbox, invoice_type="LEDES98B"))


def test_non_xml_payload_rejected_before_sending(sandbox: EbhSandbox) -> None:
    d = Document(id="inv-2", provider="ebh", payload=b'{"json": true}')
    with pytest.raises(DocumentError):
        ebh.build_request(d, make_ctx(sandbox))


@pytest.mark.parametrize("name", ["producer_id", "provider_key"])
def test_missing_credentials_are_config_errors(
    sandbox: EbhSandbox, tmp_path: Any, name: str
) -> None:
    """A required credential that is empty is refused when the configuration loads."""
    settings = {"base_url": sandbox.url, "producer_id": "P1", "provider_key": KEY, name: ""}
    with pytest.raises(ConfigError, match=name) as info:
        Relay(f"sqlite:///{tmp_path / 'm.db'}", providers={"ebh": settings}).close()
    assert KEY not in str(info.value)


def test_send_then_poll_until_delivered(sandbox: EbhSandbox) -> None:
    """201 -> accepted (id in state); 202, 202 -> accepted; 200 -> delivered."""
    ctx = make_ctx(sandbox)
    sent = send(ctx, doc())
    assert sent.kind == OutcomeKind.ACCEPTED
    rid = sent.provider_ref
    assert ctx.state["validation_id"] == rid
    assert [e["key"] for e in sandbox.effects] == [rid]
    kinds = [ebh.poll_status(doc(), ctx) for _ in range(3)]
    assert [o.kind for o in kinds] == [
        OutcomeKind.ACCEPTED,
        OutcomeKind.ACCEPTED,
        OutcomeKind.DELIVERED,
    ]
    assert [o.provider_status for o in kinds] == ["1", "2", "4"]
    assert kinds[-1].provider_ref == rid
    assert kinds[-1].request_id
    assert ctx.state["validated_invoice_url"].startswith(sandbox.url)
    # The sandbox saw the right headers on the GET too.
    get = sandbox.requests[-1]
    assert get["method"] == "GET"
    assert get["headers"]["ProducerId"] == "P1"
    assert get["headers"]["Username"] == "robot"


def test_send_then_poll_rejected_with_currency_error(sandbox: EbhSandbox) -> None:
    sandbox.set_option("polls_until_done", 0)
    ctx = make_ctx(sandbox)
    send(ctx, doc("ubf_invoice_bad_currency.xml"))
    outcome = ebh.poll_status(doc("ubf_invoice_bad_currency.xml"), ctx)
    assert outcome.kind == OutcomeKind.REJECTED
    assert [fe.message for fe in outcome.field_errors] == ["The currency must follow ISO Codes"]
    assert outcome.field_errors[0].severity == "UBF_MESSAGE"
    assert "INV-2024-0118" in (outcome.field_errors[0].field or "")
    assert outcome.error_url is None
    assert "validated_invoice_url" not in ctx.state


def test_validated_invoice_url_from_other_host_is_not_kept(sandbox: EbhSandbox) -> None:
    """base_url 'localhost' vs the sandbox's '127.0.0.1': the URL is on another host."""
    sandbox.set_option("polls_until_done", 0)
    url = sandbox.url.replace("127.0.0.1", "localhost")
    ctx = make_ctx(sandbox, base_url=url)
    assert send(ctx, doc()).kind == OutcomeKind.ACCEPTED
    assert ebh.poll_status(doc(), ctx).kind == OutcomeKind.DELIVERED
    assert "validated_invoice_url" not in ctx.state


def test_status3_resend_then_new_request(sandbox: EbhSandbox) -> None:
    """Status 3 -> retry(resend); the next build_request forgets the old id."""
    sandbox.set_option("polls_until_done", 0)
    sandbox.set_option("fail_status3", 1)
    ctx = make_ctx(sandbox)
    first = send(ctx, doc()).provider_ref
    outcome = ebh.poll_status(doc(), ctx)
    assert (outcome.kind, outcome.resend) == (OutcomeKind.RETRY, True)
    second = send(ctx, doc()).provider_ref
    assert first != second
    assert ctx.state["previous_validation_ids"] == [first]
    assert ebh.poll_status(doc(), ctx).kind == OutcomeKind.DELIVERED
    assert len(sandbox.effects) == 2


def test_poll_without_id_asks_for_resend(sandbox: EbhSandbox) -> None:
    outcome = ebh.poll_status(doc(), make_ctx(sandbox))
    assert (outcome.kind, outcome.resend) == (OutcomeKind.RETRY, True)


def test_poll_transport_failure_polls_again(sandbox: EbhSandbox) -> None:
    ctx = make_ctx(sandbox, base_url="http://127.0.0.1:9")
    ctx.state["validation_id"] = "0f0e1d2c-3b4a-5968-7766-554433221100"
    assert ebh.poll_status(doc(), ctx).kind == OutcomeKind.ACCEPTED


def test_poll_500_fault_polls_again(sandbox: EbhSandbox) -> None:
    ctx = make_ctx(sandbox)
    send(ctx, doc())
    sandbox.set_faults(["error*1:500"])
    outcome = ebh.poll_status(doc(), ctx)
    assert outcome.kind == OutcomeKind.ACCEPTED
    assert "unexpected error" in (outcome.message or "")


def test_wrong_key_is_config_error_on_send(sandbox: EbhSandbox) -> None:
    ctx = make_ctx(sandbox, provider_key="wrong-key")
    outcome = send(ctx, doc())
    assert outcome.kind == OutcomeKind.CONFIG_ERROR
    assert "wrong-key" not in outcome.describe()


def test_reconcile_setting() -> None:
    """resend_after_unknown: retry (send again) by default, None (leave pending) when off."""
    info = ebh.provider_info()
    assert info.idempotency == "none"
    assert info.async_validation == "poll"
    on = Context(provider=info, settings={}, base_url="", environment=None, services=RealHttp())
    outcome = ebh.reconcile(doc(), on)
    assert outcome is not None
    assert outcome.kind == OutcomeKind.RETRY
    off = Context(
        provider=info,
        settings={"resend_after_unknown": False},  # a bool: the configuration checks it
        base_url="",
        environment=None,
        services=RealHttp(),
    )
    assert ebh.reconcile(doc(), off) is None


def test_demo_batch_documents(sandbox: EbhSandbox) -> None:
    assert ebh.provider_info().demo is ebh.demo_batch
    assert ebh.provider_info().sandbox is EbhSandbox
    batch = ebh.demo_batch(sandbox, "http://127.0.0.1:1/webhooks")
    assert batch.settings["base_url"] == sandbox.url
    assert [d.metadata["invoice_type"] for d in batch.documents] == [
        "MultipleInvoiceUBF",
        "MultipleInvoiceUBF",
        "ESF",
    ]
