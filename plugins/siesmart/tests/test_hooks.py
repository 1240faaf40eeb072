"""The hooks one by one against the sandbox over real HTTP.

A small harness lends the Context real HTTP (requests), a token cache and a list of other
documents, the way the engine does; auth headers and classification come from docrelay's
public ``PluginHost`` (declared auth, the plugin's classifier then the generic one). No HTTP
is mocked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docrelay_siesmart as plugin
import pytest
import requests
from docrelay import (
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
    Token,
    TransportError,
    TransportFailure,
)
from docrelay_siesmart.sandbox import SieSmartSandbox

PROPOSAL = {
    "officeId": "OFF-DE-1001",
    "salesContactId": "SC-DE-0417",
    "label": "Kessler excavator",
    "customer": {"companyName": "Kessler GmbH"},
    "assets": [{"iacCode": "IAC-2210"}],
    "calculation": {"termMonths": 48},
}


HOOKS = PluginHost(autoload=False, plugins=[plugin]).hooks("siesmart")


class Services:
    """What the engine lends a context, done plainly."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.views: list[DocumentView] = []
        self.secrets: set[str] = set()
        self.fetches = 0

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        try:
            r = requests.request(
                request.method,
                request.url,
                data=request.body or None,
                headers=dict(request.headers),
                params=dict(request.params) or None,
                timeout=5,
            )
        except requests.ConnectionError as exc:
            raise TransportFailure(TransportError("connect", str(exc), sent=False)) from None
        return HttpResponse(status=r.status_code, headers=dict(r.headers), body=r.content)

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Token]) -> str:
        tok = self.tokens.get(credential)
        if tok is None:
            self.fetches += 1
            tok = fetch(ctx)
            self.tokens[credential] = tok
        self.secrets.add(tok.value)
        return tok.value

    def find_documents(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[DocumentView]:
        return [
            v
            for v in self.views
            if (kind is None or v.kind == kind)
            and all(v.metadata.get(k) == val for k, val in metadata.items())
        ]

    def get_document(self, provider: str, doc_id: str) -> DocumentView | None:
        return next((v for v in self.views if v.id == doc_id), None)

    def register_secret(self, value: str) -> None:
        self.secrets.add(value)

    def auth_headers(self, ctx: Context, request: HttpRequest) -> dict[str, str]:
        return HOOKS.auth_headers(request, ctx)

    def classify(
        self, ctx: Context, response: HttpResponse | None, error: TransportError | None
    ) -> Outcome:
        return HOOKS.classify_response(response, error, ctx, ctx.document)


@pytest.fixture(scope="module")
def _server() -> Iterator[SieSmartSandbox]:
    sbx = SieSmartSandbox()
    sbx.start()
    try:
        yield sbx
    finally:
        sbx.stop()


@pytest.fixture
def sandbox(_server: SieSmartSandbox) -> SieSmartSandbox:
    _server.config.update(SieSmartSandbox.options)
    _server.set_faults([])
    _server.reset()
    return _server


@pytest.fixture
def services() -> Services:
    return Services()


def make_ctx(
    sbx: SieSmartSandbox,
    services: Services,
    document: Document | None = None,
    key: str | None = "0b7f6c1e-2c55-5d1a-9a57-1f0e6a2b3c4d",
    state: dict[str, Any] | None = None,
    **settings: Any,
) -> Context:
    info = plugin.provider_info()
    resolved = {s.name: s.default for s in info.settings}
    resolved.update(client_id=sbx.config["client_id"], client_secret=sbx.config["client_secret"])
    resolved.update(settings)
    return Context(
        provider=info,
        settings=resolved,
        base_url=sbx.url,
        environment=None,
        services=services,
        key=key,
        state=dict(state or {}),
        document=document,
    )


def doc(kind: str, payload: Any, doc_id: str = "d-1", **metadata: str) -> Document:
    return Document(
        id=doc_id,
        provider="siesmart",
        kind=kind,
        content_type="application/json",
        payload=json.dumps(payload).encode(),
        metadata=metadata,
    )


def send(ctx: Context, document: Document) -> tuple[HttpResponse, Any]:
    """build_request + auth headers + HTTP + classification, as one attempt."""
    req = plugin.build_request(document=document, ctx=ctx)
    resp = ctx.request(req.method, req.url, body=req.body, headers=req.headers, auth=True)
    return resp, ctx.classify(resp)


def view_of(document: Document, ctx: Context, state: str, ref: str | None) -> DocumentView:
    return DocumentView(
        id=document.id,
        provider="siesmart",
        kind=document.kind,
        state=state,
        metadata=document.metadata,
        provider_ref=ref,
        provider_state=dict(ctx.state),
        updated_at=float(ctx.state.get("etag_at") or 0.0),
    )


def test_provider_info() -> None:
    info = plugin.provider_info()
    assert info.name == "siesmart"
    assert info.environments == {"sandbox": "http://127.0.0.1:8703"}
    assert info.idempotency == "none"
    assert info.rate_limit is not None
    assert (info.rate_limit.requests, info.rate_limit.per_seconds) == (100, 60)
    assert info.credential_setting == "client_id"
    assert info.setting("client_secret") is not None
    assert info.setting("client_secret").secret  # type: ignore[union-attr]
    assert set(info.kinds) == {"proposal", "proposal_update", "decision"}
    assert info.sandbox is SieSmartSandbox
    assert info.demo is plugin.demo_batch
    assert info.hook_api == 2


def test_create_sends_label_from_key_and_keeps_etag(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    """Create: POST /proposals without If-Match, a bearer token, the label tagged with the
    key; the answer's id and ETag are kept in ctx.state."""
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d)
    resp, out = send(ctx, d)
    assert out.kind == OutcomeKind.DELIVERED
    pid = out.provider_ref
    assert pid == resp.json()["id"]
    assert out.trace_id == resp.header("X-B2B-TRACE-ID")
    assert ctx.state["etag"] == resp.header("ETag")
    assert ctx.state["proposal_id"] == pid
    sent = sandbox.requests[-1]
    assert "If-Match" not in sent["headers"]
    assert sent["headers"]["Authorization"] == "***"  # the request log masks credentials
    label = f"Kessler excavator [docrelay-{ctx.key}]"
    assert sandbox.proposals[str(pid)]["label"] == label
    assert sandbox.effects[-1]["label"] == label
    assert services.secrets >= {sandbox.config["client_secret"]}


@pytest.mark.parametrize(
    ("label", "mode", "expected"),
    [
        (None, "suffix", "docrelay-K"),
        ("", "suffix", "docrelay-K"),
        ("Mine", "suffix", "Mine [docrelay-K]"),
        ("Mine [docrelay-K]", "suffix", "Mine [docrelay-K]"),
        ("Mine", "replace", "docrelay-K"),
        ("Mine", "off", None),
    ],
)
def test_lookup_label(label: str | None, mode: str, expected: str | None) -> None:
    assert plugin.lookup_label(label, "K", mode) == expected


def test_token_is_fetched_once_and_json_body(sandbox: SieSmartSandbox, services: Services) -> None:
    d = doc("proposal", PROPOSAL)
    for i in range(3):
        ctx = make_ctx(sandbox, services, d, key=f"k{i}")
        assert send(ctx, d)[1].kind == OutcomeKind.DELIVERED
    assert services.fetches == 1
    assert sandbox.tokens.issued == 1


@pytest.mark.parametrize(
    ("settings", "kind", "words"),
    [
        ({"client_secret": "wrong"}, OutcomeKind.CONFIG_ERROR, "Unauthorized"),
        ({"audience": "https://elsewhere"}, OutcomeKind.CONFIG_ERROR, "Service not enabled"),
    ],
)
def test_token_refused_is_config_error(
    sandbox: SieSmartSandbox,
    services: Services,
    settings: dict[str, str],
    kind: OutcomeKind,
    words: str,
) -> None:
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d, **settings)
    with pytest.raises(OutcomeError) as info:
        ctx.auth_headers()
    assert info.value.outcome.kind == kind
    assert words in (info.value.outcome.message or "")
    assert "wrong" not in str(info.value)


def test_token_endpoint_down_is_retry(sandbox: SieSmartSandbox, services: Services) -> None:
    sandbox.config["token_error"] = 503
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d)
    with pytest.raises(OutcomeError) as info:
        ctx.auth_headers()
    assert info.value.outcome.kind == OutcomeKind.RETRY


def test_token_endpoint_429_is_throttled(sandbox: SieSmartSandbox, services: Services) -> None:
    """Seed 002: 429 is the rate limit, lifted once the rate drops: throttled, not retry."""
    sandbox.config["token_error"] = 429
    ctx = make_ctx(sandbox, services, doc("proposal", PROPOSAL))
    with pytest.raises(OutcomeError) as info:
        ctx.auth_headers()
    assert info.value.outcome.kind == OutcomeKind.THROTTLED
    assert info.value.outcome.status == 429


def test_token_endpoint_unreachable_is_retry(sandbox: SieSmartSandbox, services: Services) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d, token_url=f"http://127.0.0.1:{port}/oauth/token")
    with pytest.raises(OutcomeError) as info:
        ctx.auth_headers()
    assert info.value.outcome.kind == OutcomeKind.RETRY
    assert info.value.outcome.rule == "docrelay:auth-token-transport"


class _Recording(Services):
    """Records where the token request goes and never sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        self.urls.append(request.url)
        raise TransportFailure(TransportError("connect", "not sent in tests", sent=False))


@pytest.mark.parametrize(
    ("env", "base_url", "expected"),
    [
        ("test", "https://x", plugin.TOKEN_URLS["test"]),
        ("production", "https://x", plugin.TOKEN_URLS["production"]),
        (None, "http://127.0.0.1:1", "http://127.0.0.1:1/oauth/token"),
    ],
)
def test_token_url_by_environment(env: str | None, base_url: str, expected: str) -> None:
    services = _Recording()
    settings = {"client_id": "c", "client_secret": "s", "audience": plugin.AUDIENCE}
    ctx = Context(provider=plugin.provider_info(), settings=settings, base_url=base_url,
                  environment=env, services=services)  # fmt: skip
    with pytest.raises(OutcomeError):
        ctx.auth_headers()
    assert services.urls == [expected]


def _created(sandbox: SieSmartSandbox, services: Services) -> tuple[Document, Context, str]:
    create = doc("proposal", PROPOSAL, doc_id="prop-1")
    cctx = make_ctx(sandbox, services, create)
    out = send(cctx, create)[1]
    assert out.provider_ref is not None
    services.views.append(view_of(create, cctx, "delivered", out.provider_ref))
    return create, cctx, out.provider_ref


def test_update_uses_etag_of_creating_document(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    """An update named by metadata 'proposal' goes to PUT /proposals/{id} with If-Match =
    the ETag the create stored; success stores the new ETag."""
    _create, cctx, pid = _created(sandbox, services)
    upd = doc("proposal_update", {"label": "renamed"}, doc_id="upd-1", proposal="prop-1")
    assert plugin.hold(document=upd, ctx=make_ctx(sandbox, services, upd)) is None
    uctx = make_ctx(sandbox, services, upd)
    resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.DELIVERED
    assert out.provider_ref == pid
    sent = sandbox.requests[-1]
    assert (sent["method"], sent["path"]) == ("PUT", f"/proposals/{pid}")
    assert sent["headers"]["If-Match"] == cctx.state["etag"]
    assert uctx.state["etag"] == resp.header("ETag") != cctx.state["etag"]


def test_decision_takes_newest_etag_across_documents(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    _create, _cctx, pid = _created(sandbox, services)
    upd = doc("proposal_update", {"label": "renamed"}, doc_id="upd-1", proposal="prop-1")
    uctx = make_ctx(sandbox, services, upd)
    assert send(uctx, upd)[1].kind == OutcomeKind.DELIVERED
    services.views.append(view_of(upd, uctx, "delivered", pid))
    dec = doc(
        "decision",
        {
            "commentToRiskAnalyst": "fine",
            "siemensMayContactCustomer": True,
            "siemensMayRequestCreditData": True,
            "prelease": False,
            "ignored": "not part of the decision body",
        },
        doc_id="dec-1",
        proposal_id=pid,
    )
    dctx = make_ctx(sandbox, services, dec)
    _resp, out = send(dctx, dec)
    assert out.kind == OutcomeKind.DELIVERED, out
    assert out.provider_status == "PENDING"
    assert sandbox.requests[-1]["headers"]["If-Match"] == uctx.state["etag"]
    assert "ignored" not in sandbox.effects[-1]["request"]


def test_no_known_etag_gets_the_proposal_first(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    _create, _cctx, pid = _created(sandbox, services)
    services.views.clear()  # nothing known about the proposal's ETag
    sandbox.touch(pid)
    upd = doc("proposal_update", {"label": "x"}, doc_id="upd-2", proposal_id=pid)
    uctx = make_ctx(sandbox, services, upd)
    _resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.DELIVERED
    methods = [(r["method"], r["status"]) for r in sandbox.requests[-2:]]
    assert methods == [("GET", 200), ("PUT", 200)]


def test_stale_then_refresh_then_delivered(sandbox: SieSmartSandbox, services: Services) -> None:
    """on_conflict = "overwrite": 412 -> stale; refresh_resource re-reads the proposal; the
    next attempt succeeds over the other edit."""
    _create, _cctx, pid = _created(sandbox, services)
    sandbox.touch(pid)  # someone else edits the proposal
    upd = doc("proposal_update", {"label": "y"}, doc_id="upd-3", proposal="prop-1")
    uctx = make_ctx(sandbox, services, upd, on_conflict="overwrite")
    resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.STALE
    assert out.status == 412
    assert out.trace_id == resp.header("X-B2B-TRACE-ID") == resp.json()["traceId"]
    assert plugin.refresh_resource(document=upd, ctx=uctx) is True
    assert uctx.state["etag"] == sandbox.etags[pid]
    _resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.DELIVERED
    assert [e["kind"] for e in sandbox.effects] == ["proposal_created", "proposal_updated"]


def test_stale_after_foreign_edit_refresh_decides_rejected(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    """Default on_conflict: the re-read shows a version docrelay never saw, so
    refresh_resource ends the round (OutcomeError rejected) and keeps the known ETag."""
    _create, cctx, pid = _created(sandbox, services)
    known = cctx.state["etag"]
    theirs = sandbox.touch(pid)
    upd = doc("proposal_update", {"label": "y"}, doc_id="upd-4", proposal="prop-1")
    uctx = make_ctx(sandbox, services, upd)
    _resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.STALE
    assert uctx.state["based_on"] == known
    with pytest.raises(OutcomeError) as err:
        plugin.refresh_resource(document=upd, ctx=uctx)
    assert err.value.outcome.kind == OutcomeKind.REJECTED
    assert err.value.outcome.message == (
        f"proposal {pid} changed at SieSmart since {known}: review and resubmit"
    )
    assert err.value.outcome.trace_id  # the GET's X-B2B-TRACE-ID
    assert uctx.state["conflict_etag"] == theirs
    assert uctx.state.get("etag") != theirs
    assert [e["kind"] for e in sandbox.effects] == ["proposal_created"]


def test_failed_reread_then_foreign_edit_is_refused_before_sending(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    """The GET after the 412 failed (503); the next attempt reads first and refuses to send
    over the foreign edit (no second PUT leaves)."""
    _create, cctx, pid = _created(sandbox, services)
    known = cctx.state["etag"]
    sandbox.touch(pid)
    upd = doc("proposal_update", {"label": "y"}, doc_id="upd-5", proposal="prop-1")
    uctx = make_ctx(sandbox, services, upd)
    _resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.STALE
    sandbox.set_faults(["error*1:503"])
    assert plugin.refresh_resource(document=upd, ctx=uctx) is True
    assert uctx.state["needs_refresh"] is True
    puts_before = [r for r in sandbox.requests if r["method"] == "PUT"]
    with pytest.raises(OutcomeError) as err:
        send(uctx, upd)
    assert err.value.outcome.kind == OutcomeKind.REJECTED
    assert f"since {known}: review and resubmit" in err.value.outcome.message
    assert [r for r in sandbox.requests if r["method"] == "PUT"] == puts_before
    assert "needs_refresh" not in uctx.state


def test_refresh_of_unknown_proposal_is_false(sandbox: SieSmartSandbox, services: Services) -> None:
    upd = doc("proposal_update", {"label": "y"}, proposal_id="999")
    assert plugin.refresh_resource(document=upd, ctx=make_ctx(sandbox, services, upd)) is False


def test_refresh_when_get_fails_rereads_before_the_next_attempt(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    _create, _cctx, pid = _created(sandbox, services)
    upd = doc("proposal_update", {"label": "z"}, proposal_id=pid)
    uctx = make_ctx(sandbox, services, upd, state={"proposal_id": pid, "etag": "old"})
    sandbox.set_faults(["error*1:503"])
    assert plugin.refresh_resource(document=upd, ctx=uctx) is True
    assert uctx.state["needs_refresh"] is True
    _resp, out = send(uctx, upd)
    assert out.kind == OutcomeKind.DELIVERED
    assert "needs_refresh" not in uctx.state


def test_hold_until_creating_document_is_delivered(
    sandbox: SieSmartSandbox, services: Services
) -> None:
    upd = doc("proposal_update", {}, doc_id="u", proposal="prop-9")
    ctx = make_ctx(sandbox, services, upd)
    assert "not submitted yet" in (plugin.hold(document=upd, ctx=ctx) or "")
    services.views.append(
        DocumentView(id="prop-9", provider="siesmart", kind="proposal", state="retry_wait",
                     metadata={})
    )  # fmt: skip
    assert "to be delivered (now retry_wait)" in (plugin.hold(document=upd, ctx=ctx) or "")
    services.views[0] = attrs_evolve(services.views[0], state="delivered", provider_ref="47")
    assert plugin.hold(document=upd, ctx=ctx) is None
    ctx.state.update(proposal_id="47", etag="2025-06-01T10:00:00Z")  # a known version
    req = plugin.build_request(document=upd, ctx=ctx)
    assert req.url == "/proposals/47"
    assert req.headers["If-Match"] == "2025-06-01T10:00:00Z"  # set in build_request now
    dec = doc("decision", {}, doc_id="d", proposal="prop-9", after="u")
    assert "waiting for document u" in (plugin.hold(document=dec, ctx=ctx) or "")
    assert plugin.hold(document=doc("proposal", PROPOSAL), ctx=ctx) is None


def attrs_evolve(view: DocumentView, **changes: Any) -> DocumentView:
    import attrs

    return attrs.evolve(view, **changes)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (doc("proposal_update", {"a": 1}), "set metadata 'proposal'"),
        (doc("proposal", [1, 2]), "JSON object"),
        (
            Document(id="x", provider="siesmart", kind="proposal", payload=b"<xml/>"),
            "not a JSON object",
        ),
        (doc("invoice", {}), "does not know document kind"),
    ],
)
def test_documents_refused_before_sending(
    sandbox: SieSmartSandbox, services: Services, document: Document, words: str
) -> None:
    with pytest.raises(DocumentError, match=words):
        plugin.build_request(document=document, ctx=make_ctx(sandbox, services, document))


def test_reconcile_create_found(sandbox: SieSmartSandbox, services: Services) -> None:
    """A create whose answer was dropped is found by its label: delivered, id and ETag kept."""
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d)
    sandbox.set_faults(["drop*1"])
    with pytest.raises(TransportFailure):
        send(ctx, d)
    assert len(sandbox.effects) == 1
    fresh = make_ctx(sandbox, services, d)  # after a restart: only the key survives
    out = plugin.reconcile(document=d, ctx=fresh)
    assert out is not None
    assert out.kind == OutcomeKind.DELIVERED
    pid = sandbox.effects[0]["key"]
    assert out.provider_ref == pid
    assert fresh.state["etag"] == sandbox.etags[pid]
    assert len(sandbox.effects) == 1


def test_reconcile_create_not_found(sandbox: SieSmartSandbox, services: Services) -> None:
    d = doc("proposal", PROPOSAL)
    out = plugin.reconcile(document=d, ctx=make_ctx(sandbox, services, d))
    assert out is not None
    assert out.kind == OutcomeKind.RETRY
    assert out.rule == "siesmart:reconcile-not-found"


def test_reconcile_other_key_does_not_match(sandbox: SieSmartSandbox, services: Services) -> None:
    d = doc("proposal", PROPOSAL)
    assert send(make_ctx(sandbox, services, d, key="first"), d)[1].kind == OutcomeKind.DELIVERED
    out = plugin.reconcile(document=d, ctx=make_ctx(sandbox, services, d, key="second"))
    assert out is not None
    assert out.kind == OutcomeKind.RETRY


def test_reconcile_label_off_is_none(sandbox: SieSmartSandbox, services: Services) -> None:
    d = doc("proposal", PROPOSAL)
    assert (
        plugin.reconcile(document=d, ctx=make_ctx(sandbox, services, d, label_mode="off")) is None
    )


def test_reconcile_search_failure_raises(sandbox: SieSmartSandbox, services: Services) -> None:
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d)
    sandbox.set_faults(["error*1:503"])
    with pytest.raises(OutcomeError) as info:
        plugin.reconcile(document=d, ctx=ctx)
    assert info.value.outcome.kind == OutcomeKind.RETRY


def test_reconcile_update_and_decision(sandbox: SieSmartSandbox, services: Services) -> None:
    """A dropped update/decision is recognised on the proposal; an unapplied one is resent."""
    _create, _cctx, pid = _created(sandbox, services)
    upd = doc("proposal_update", {"label": "after drop"}, doc_id="u", proposal_id=pid)
    out = plugin.reconcile(document=upd, ctx=make_ctx(sandbox, services, upd))
    assert out is not None
    assert out.kind == OutcomeKind.RETRY
    uctx = make_ctx(sandbox, services, upd)
    sandbox.set_faults(["drop*1"])
    with pytest.raises(TransportFailure):
        send(uctx, upd)
    out = plugin.reconcile(document=upd, ctx=uctx)
    assert out is not None
    assert out.kind == OutcomeKind.DELIVERED
    body = {
        "commentToRiskAnalyst": "c",
        "siemensMayContactCustomer": False,
        "siemensMayRequestCreditData": True,
        "prelease": True,
    }
    dec = doc("decision", body, doc_id="dd", proposal_id=pid)
    dctx = make_ctx(sandbox, services, dec)
    out = plugin.reconcile(document=dec, ctx=dctx)
    assert out is not None
    assert out.kind == OutcomeKind.RETRY
    sandbox.set_faults(["drop*1"])
    with pytest.raises(TransportFailure):
        send(dctx, dec)
    out = plugin.reconcile(document=dec, ctx=dctx)
    assert out is not None
    assert out.kind == OutcomeKind.DELIVERED
    assert out.provider_status == "PENDING"
    kinds = [e["kind"] for e in sandbox.effects]
    assert kinds == ["proposal_created", "proposal_updated", "decision_submitted"]


def test_classify_hook_transport_error(sandbox: SieSmartSandbox, services: Services) -> None:
    d = doc("proposal", PROPOSAL)
    ctx = make_ctx(sandbox, services, d)
    error = TransportError("read_timeout", "timed out", sent=True)
    assert plugin.classify_response(response=None, error=error, ctx=ctx, document=d) is None
    assert ctx.classify(None, error).kind == OutcomeKind.UNKNOWN
