"""The plugin's hooks one by one, with a real Context whose HTTP goes to the sandbox.

The services behind the Context are a stand-in for the engine's (real HTTP with requests, the
declared bearer token as the core builds it); the engine itself is exercised end to end in
tests/test_procuros.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import docrelay_procuros
import pytest
import requests
from docrelay import (
    ConfigError,
    Context,
    Document,
    DocumentError,
    DocumentView,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    PluginHost,
    Relay,
    TransportError,
    TransportFailure,
)
from docrelay.auth import BearerToken
from docrelay_procuros import (
    build_request,
    classify_response,
    error_report,
    on_failure,
    provider_info,
    reconcile,
    type_for_kind,
)
from docrelay_procuros._demo import sample
from docrelay_procuros._lookup import Lookup, forward_decision
from docrelay_procuros._transactions import TRANSACTION_TYPES
from docrelay_procuros.sandbox import ProcurosSandbox

TOKEN = "procuros-test-token"
HOST = PluginHost(autoload=False, plugins=[docrelay_procuros])


class Services:
    """What the engine lends a Context, doing real HTTP with requests."""

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
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
            raise TransportFailure(TransportError("connect", str(exc), sent=False)) from exc
        return HttpResponse(status=r.status_code, headers=dict(r.headers), body=r.content)

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Any]) -> str:
        raise AssertionError("Procuros has no token endpoint")

    def find_documents(self, provider: str, kind: str | None, metadata: Mapping[str, str]) -> list:  # type: ignore[type-arg]
        return []

    def register_secret(self, value: str) -> None:
        self.secrets.append(value)

    def get_document(self, provider: str, doc_id: str) -> DocumentView | None:
        return None

    def classify(
        self, ctx: Context, response: HttpResponse | None, error: TransportError | None
    ) -> Outcome:
        return HOST.hooks("procuros").classify_response(response, error, ctx, ctx.document)

    def auth_headers(self, ctx: Context, request: HttpRequest) -> dict[str, str]:
        # What the core makes of ProviderInfo(auth=BearerToken("api_token")).
        token = ctx.setting("api_token")
        if token is None or not str(token).strip():
            message = "procuros: the setting api_token is not set"
            raise OutcomeError(Outcome(OutcomeKind.CONFIG_ERROR, message=message,
                                       rule="docrelay:auth-no-api_token"))  # fmt: skip
        return {"Authorization": "Bearer " + ctx.secret(str(token).strip())}


def make_ctx(base_url: str, failures: int = 0, **settings: Any) -> Context:
    """A context with the provider's defaults under *settings* (as the core loads them)."""
    info = provider_info()
    settings = {**{s.name: s.default for s in info.settings}, "api_token": TOKEN, **settings}
    return Context(
        provider=info,
        settings=settings,
        base_url=base_url,
        environment="sandbox",
        services=Services(),
        failures=failures,
    )


def order(doc_id: str = "PO-1", **kw: Any) -> Document:
    kw.setdefault("kind", "order")
    return Document(
        id=doc_id,
        provider="procuros",
        payload=sample("order.json"),
        content_type="application/json",
        **kw,
    )


def received(sb: ProcurosSandbox) -> list[dict[str, Any]]:
    return [e for e in sb.effects if e["kind"] == "transaction_received"]


def send(sb: ProcurosSandbox, doc: Document, ctx: Context) -> Outcome:
    """Build, authenticate, send and classify one document."""
    req = build_request(doc, ctx)
    req = req.with_headers(ctx.auth_headers(req))
    r = requests.request(req.method, ctx.url(req.url), data=req.body, headers=dict(req.headers))
    resp = HttpResponse(status=r.status_code, headers=dict(r.headers), body=r.content)
    ctx.document = doc
    # The engine's path: the plugin's classifier, then the generic one, completed.
    return HOST.hooks("procuros").classify_response(resp, None, ctx, doc)


# -- provider_info -------------------------------------------------------------------------------


def test_provider_info() -> None:
    info = provider_info()
    assert info.name == "procuros"
    assert info.environments["sandbox"] == "http://127.0.0.1:8702"
    assert info.environments["staging"] == "https://api.procuros-staging.io"
    assert info.environments["production"] == "https://api.procuros.io"
    assert info.idempotency == "payload"
    assert info.async_validation == "none"
    token = info.setting("api_token")
    assert token is not None
    assert token.secret
    assert token.required
    assert info.credential_setting == "api_token"
    report = info.setting("report_after_failures")
    assert report is not None
    assert report.default == 1
    dup = info.setting("duplicate_message")
    assert dup is not None
    assert dup.default == "Payload already received"
    assert set(info.kinds) == {t.lower() for t in TRANSACTION_TYPES} | {"document"}
    assert info.hook_api == 2
    assert info.sandbox is ProcurosSandbox
    assert info.demo is not None


# -- build_request ---------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", TRANSACTION_TYPES)
def test_every_type_has_its_kind(type_: str) -> None:
    assert type_for_kind(type_.lower()) == type_
    assert type_for_kind(type_.lower().replace("_", "-")) == type_
    assert type_for_kind(type_.lower().replace("_", " ")) == type_
    assert type_for_kind(type_) == type_


@pytest.mark.parametrize("kind", ["document", "ubl-invoice", "purchase_order", "asn", ""])
def test_kinds_without_a_type(kind: str) -> None:
    assert type_for_kind(kind) is None


def test_content_payload_is_wrapped(validators: Any) -> None:
    ctx = make_ctx("http://127.0.0.1:1")
    before = datetime.now(UTC).date().isoformat()
    req = build_request(order(), ctx)
    assert (req.method, req.url) == ("POST", "/v2/transactions")
    assert req.headers["Content-Type"] == "application/json"
    body = json.loads(req.body)
    assert body == {"type": "ORDER", "content": json.loads(sample("order.json"))}
    validators.request("/v2/transactions", "POST", body)
    sent_on = ctx.state.pop("first_sent_on")
    assert sent_on in {datetime.now(UTC).date().isoformat(), before}
    assert ctx.state == {"transaction_type": "ORDER", "document_number": "PO-2024-10417"}


def test_whole_body_payload_is_sent_as_is(validators: Any) -> None:
    doc = Document(id="IV-1", provider="procuros", payload=sample("invoice.json"))
    body = json.loads(build_request(doc, make_ctx("http://x")).body)
    assert body == json.loads(sample("invoice.json"))
    validators.request("/v2/transactions", "POST", body)


@pytest.mark.parametrize(
    ("payload", "kind", "match"),
    [
        (b"<Invoice/>", "invoice", "not a JSON object"),
        (b"[1]", "invoice", "JSON object"),
        (b'{"header": {}}', "ubl", "no Procuros TransactionType"),
        (b'{"type": "PAYMENT", "content": {}}', "document", "not a Procuros TransactionType"),
        (b'{"type": "ORDER", "content": []}', "document", "content must be a JSON object"),
        (b'{"type": "ORDER", "content": {}}', "invoice", "means INVOICE"),
    ],
)
def test_impossible_documents_are_refused_before_sending(
    payload: bytes, kind: str, match: str
) -> None:
    doc = Document(id="d", provider="procuros", payload=payload, kind=kind)
    with pytest.raises(DocumentError, match=match):
        build_request(doc, make_ctx("http://x"))


# -- auth: declared, the core sends and redacts it -----------------------------------------------


def test_bearer_token_is_declared() -> None:
    """The core adds ``Authorization: Bearer <api_token>`` to every send and every
    ``ctx.request(..., auth=True)`` and registers the token as a secret."""
    info = provider_info()
    assert info.auth == BearerToken("api_token")
    assert info.idempotency_header is None  # Procuros recognises the payload itself


@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing_token_is_a_config_error(tmp_path: Any, token: str | None) -> None:
    """A missing or blank token is refused when the configuration loads, naming the setting."""
    with pytest.raises(ConfigError, match="api_token"):
        Relay(
            store="sqlite:///" + str(tmp_path / "d.db"),
            providers={"procuros": {"base_url": "http://127.0.0.1:1", "api_token": token}},
        )


# -- the send pipeline over HTTP (no engine) ---------------------------------------------------


def test_send_twice_is_delivered_then_duplicate(sandbox: ProcurosSandbox) -> None:
    ctx = make_ctx(sandbox.url)
    first = send(sandbox, order(), ctx)
    assert first.kind is OutcomeKind.DELIVERED
    assert first.provider_status == "TRANSMITTED"
    assert first.provider_ref == sandbox.effects[0]["key"]
    second = send(sandbox, order("PO-1-copy"), ctx)
    assert second.kind is OutcomeKind.DUPLICATE
    assert len(sandbox.effects) == 1


def test_wrong_token_is_config_error(sandbox: ProcurosSandbox) -> None:
    out = send(sandbox, order(), make_ctx(sandbox.url, api_token="wrong"))
    assert out.kind is OutcomeKind.CONFIG_ERROR
    assert out.status == 401
    assert "wrong" not in json.dumps(out.to_dict())


def test_duplicate_message_setting_reaches_the_classifier(
    sandbox_factory: Callable[..., ProcurosSandbox],
) -> None:
    sb = sandbox_factory(duplicate_message="Transaction already exists")
    ctx = make_ctx(sb.url)
    send(sb, order(), ctx)
    assert send(sb, order(), ctx).kind is OutcomeKind.REJECTED
    ctx2 = make_ctx(sb.url, duplicate_message="Transaction already exists")
    assert send(sb, order(), ctx2).kind is OutcomeKind.DUPLICATE


# -- on_failure: POST /v2/errors ---------------------------------------------------------------

REJECTED = Outcome(
    OutcomeKind.REJECTED,
    status=422,
    message="The given data was invalid.",
    field_errors=[
        {"field": "supplier", "message": "Could not resolve party using provided identifiers"}
    ],
    error_url="https://portal.procuros.io/errors/1",
    rule="procuros:422-validation",
)


def test_rejected_document_is_reported_as_data(sandbox: ProcurosSandbox, validators: Any) -> None:
    doc = order(metadata={"document_number": "ERP-4711"})
    ctx = make_ctx(sandbox.url, failures=1)
    on_failure(doc, REJECTED, ctx)
    assert len(sandbox.reported_errors) == 1
    rec = sandbox.reported_errors[0]
    assert rec["errorType"] == "DATA"
    assert rec["transactionIdentifier"] == "ERP-4711"
    assert rec["transactionType"] == "ORDER"
    assert "Could not resolve party" in rec["errorReason"]
    assert rec["errorContext"]["docrelayDocumentId"] == "PO-1"
    assert rec["errorContext"]["errorUrl"] == "https://portal.procuros.io/errors/1"
    validators.request("/v2/errors", "POST", error_report(doc, REJECTED, ctx))
    assert sandbox.effects == []


def test_identifier_falls_back_to_the_content_then_the_id() -> None:
    ctx = make_ctx("http://x")
    assert error_report(order(), REJECTED, ctx)["transactionIdentifier"] == "PO-2024-10417"
    junk = Document(id="X-9", provider="procuros", payload=b"not json", kind="invoice")
    report = error_report(junk, REJECTED, ctx)
    assert report["transactionIdentifier"] == "X-9"
    assert report["transactionType"] == "INVOICE"
    unknown = Document(id="X-10", provider="procuros", payload=b"{}", kind="ubl")
    assert "transactionType" not in error_report(unknown, REJECTED, ctx)


@pytest.mark.parametrize("kind", [OutcomeKind.CONFIG_ERROR, OutcomeKind.RETRY, OutcomeKind.UNKNOWN])
def test_other_failures_are_reported_as_internal(
    sandbox: ProcurosSandbox, validators: Any, kind: OutcomeKind
) -> None:
    out = Outcome(kind, status=503, message="Server Error")
    ctx = make_ctx(sandbox.url, failures=1)
    on_failure(order(), out, ctx)
    assert [r["errorType"] for r in sandbox.reported_errors] == ["INTERNAL"]
    validators.request("/v2/errors", "POST", error_report(order(), out, ctx))


def test_report_waits_for_the_configured_number_of_rounds(sandbox: ProcurosSandbox) -> None:
    for failures in (1, 2):
        on_failure(order(), REJECTED, make_ctx(sandbox.url, failures, report_after_failures=3))
    assert sandbox.reported_errors == []
    for failures in (3, 4):
        on_failure(order(), REJECTED, make_ctx(sandbox.url, failures, report_after_failures=3))
    assert len(sandbox.reported_errors) == 2


@pytest.mark.parametrize("settings", [{"report_after_failures": 0}, {"report_errors": False}])
def test_reporting_can_be_switched_off(sandbox: ProcurosSandbox, settings: dict[str, Any]) -> None:
    on_failure(order(), REJECTED, make_ctx(sandbox.url, 5, **settings))
    assert sandbox.reported_errors == []


@pytest.mark.parametrize(
    "settings", [{"report_errors": "off"}, {"report_after_failures": -1}, {"lookup_days": -1}]
)
def test_settings_are_checked_when_the_configuration_loads(
    tmp_path: Any, settings: dict[str, Any]
) -> None:
    """Typed settings: ``"off"`` is not a bool (``false`` is), bounds hold; the core refuses
    them before anything is sent."""
    cfg = {"base_url": "http://127.0.0.1:1", "api_token": TOKEN, **settings}
    with pytest.raises(ConfigError, match=next(iter(settings))):
        Relay(store="sqlite:///" + str(tmp_path / "d.db"), providers={"procuros": cfg})


def test_report_never_raises_and_never_logs_the_token(
    sandbox: ProcurosSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # refused (401), unreachable, no token, a 5xx: all logged, none raised
    on_failure(order(), REJECTED, make_ctx(sandbox.url, 1, api_token="secret-wrong-token"))
    on_failure(order(), REJECTED, make_ctx("http://127.0.0.1:9", 1))
    on_failure(order(), REJECTED, make_ctx(sandbox.url, 1, api_token=None))
    sandbox.set_faults(["error*1:500"])
    on_failure(order(), REJECTED, make_ctx(sandbox.url, 1))
    assert sandbox.reported_errors == []
    text = caplog.text
    assert "HTTP 401" in text
    assert "HTTP 500" in text
    assert "secret-wrong-token" not in text
    assert TOKEN not in text


# -- reconcile: the lookup of sent transactions (GET /v2/all-transactions) -----------------------


def _listed(sb: ProcurosSandbox, n: int, type_: str = "ORDER", status: str = "PENDING") -> None:
    """*n* other transactions already at Procuros (the sandbox's list state)."""
    content = json.loads(sample("order.json"))
    for i in range(n):
        other = json.loads(json.dumps(content))
        other["header"]["orderIdentifier"] = f"OTHER-{i}"
        sb.transactions.append(
            {
                "procurosTransactionId": f"00000000-0000-4000-8000-{i:012d}",
                "type": type_,
                "status": status,
                "flow": "LIVE",
                "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "content": other,
            }
        )


def _reconcile(sb: ProcurosSandbox, doc: Document, **settings: Any) -> Outcome | None:
    ctx = make_ctx(sb.url, **settings)
    ctx.document = doc
    return reconcile(doc, ctx)


def test_reconcile_follows_the_pages(sandbox: ProcurosSandbox) -> None:
    _listed(sandbox, 150)
    ctx = make_ctx(sandbox.url)
    assert send(sandbox, order(), ctx).kind is OutcomeKind.DELIVERED
    out = _reconcile(sandbox, order())
    assert out is not None
    assert out.kind is OutcomeKind.DELIVERED
    assert out.provider_status == "TRANSMITTED"
    assert out.provider_ref == received(sandbox)[0]["key"]
    assert [q.get("cursor") for q in sandbox.lookups] == [None, "c100"]


def test_reconcile_not_listed_is_retry_only_when_the_whole_list_was_read(
    sandbox: ProcurosSandbox,
) -> None:
    _listed(sandbox, 150)
    out = _reconcile(sandbox, order())
    assert out is not None
    assert out.kind is OutcomeKind.RETRY
    assert out.rule == "procuros:reconcile-not-found"
    # a truncated search proves nothing: no verdict (the engine resends; Procuros dedupes)
    assert _reconcile(sandbox, order(), lookup_max_pages=1) is None


def test_reconcile_failing_lookup_gives_no_verdict(
    sandbox_factory: Callable[..., ProcurosSandbox],
) -> None:
    sb = sandbox_factory(list_status=503)
    assert _reconcile(sb, order()) is None
    assert _reconcile(sb, order(), lookup=False) is None


@pytest.mark.parametrize(
    ("status", "kind", "erp"),
    [
        ("PENDING", OutcomeKind.DELIVERED, "TRANSMITTED"),
        ("SUCCESS", OutcomeKind.DELIVERED, "TRANSMITTED"),
        ("DROPPED", OutcomeKind.NO_ACTION, "NO_ACTION"),
        ("FAILED", OutcomeKind.DUPLICATE, None),
        ("UNKNOWN", OutcomeKind.DUPLICATE, None),
    ],
)
def test_reconcile_reads_the_transaction_status(
    sandbox_factory: Callable[..., ProcurosSandbox],
    status: str,
    kind: OutcomeKind,
    erp: str | None,
) -> None:
    sb = sandbox_factory(forwarded_status="PENDING" if status == "DROPPED" else status)
    if status == "DROPPED":
        sb.config["inactive_types"] = ("ORDER",)
    send(sb, order(), make_ctx(sb.url))
    out = _reconcile(sb, order())
    assert out is not None
    assert (out.kind, out.provider_status) == (kind, erp)


def test_status_mapping_is_a_setting(sandbox_factory: Callable[..., ProcurosSandbox]) -> None:
    sb = sandbox_factory(forwarded_status="FAILED")
    send(sb, order(), make_ctx(sb.url))
    out = _reconcile(sb, order(), forwarded_statuses="PENDING,SUCCESS,FAILED")
    assert out is not None
    assert out.provider_status == "TRANSMITTED"


def test_match_by_document_number(sandbox_factory: Callable[..., ProcurosSandbox]) -> None:
    """Procuros may keep the content in its own form: match by type and number instead."""
    sb = sandbox_factory()
    send(sb, order(), make_ctx(sb.url))
    sb.transactions[0]["content"]["header"]["comments"] = "normalised by Procuros"
    by_content = _reconcile(sb, order())
    assert by_content is not None
    assert by_content.kind is OutcomeKind.RETRY
    by_number = _reconcile(sb, order(), lookup_match="document_number")
    assert by_number is not None
    assert by_number.kind is OutcomeKind.DELIVERED


def test_lookup_requests_follow_the_spec(sandbox: ProcurosSandbox, validators: Any) -> None:
    _listed(sandbox, 120)
    _reconcile(sandbox, order())
    params = {
        p["name"]: p["schema"]
        for p in validators.spec()["paths"]["/v2/all-transactions"]["get"]["parameters"]
    }
    assert len(sandbox.lookups) == 2
    for query in sandbox.lookups:
        assert set(query) <= set(params)
        assert query["filter[type]"] == "ORDER"
        for name, value in query.items():
            typed: Any = int(value) if params[name].get("type") == "integer" else value
            assert validators.errors(params[name], typed) == [], name
        start, end = query["filter[created_between]"].split(",")
        assert date.fromisoformat(start) < date.fromisoformat(end)


def test_lookup_never_shows_the_token(
    sandbox_factory: Callable[..., ProcurosSandbox], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sb = sandbox_factory(list_status=403)
    ctx = make_ctx(sb.url)
    ctx.document = order()
    answer = HttpResponse(status=400, body=b'{"message": "Payload already received"}')
    out = classify_response(answer, None, ctx, ctx.document)
    assert out is not None
    assert out.kind is OutcomeKind.DUPLICATE
    assert out.provider_status is None
    assert "HTTP 403" in (out.message or "")
    assert TOKEN not in repr(out) + caplog.text


@pytest.mark.parametrize(
    ("statuses", "decision"),
    [
        (["PENDING"], "TRANSMITTED"),
        (["DROPPED"], "NO_ACTION"),
        (["PENDING", "SUCCESS"], "TRANSMITTED"),
        (["PENDING", "DROPPED"], None),  # two matches that disagree decide nothing
        (["FAILED"], None),
        ([], None),
    ],
)
def test_forward_decision(statuses: list[str], decision: str | None) -> None:
    found = Lookup(
        transactions=tuple(
            {"procurosTransactionId": f"t{i}", "status": s, "createdAt": f"2026-01-0{i + 1}"}
            for i, s in enumerate(statuses)
        ),
        complete=True,
    )
    got, tx = forward_decision(found, make_ctx("http://127.0.0.1:1"))
    assert got == decision
    assert (tx is None) == (not statuses)
