"""The generic protocol in the core: declared auth and idempotency header, the generic
classification and its completion, the hook set derived from the hookspecs, ``ctx`` lookups."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import docrelay
import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import (
    Context,
    DocState,
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    Setting,
)
from docrelay._auth import declared_headers, fetch_token
from docrelay._classify import MAX_RETRY_AFTER, complete
from docrelay._host import HOOK_NAMES, PluginHost
from docrelay._redact import redact
from docrelay.auth import ApiKeyHeader, BearerToken, OAuth2ClientCredentials
from docrelay.testing import FAST_ENGINE

SECRETS = {"client_id": "acme-client", "client_secret": "acme-secret-value"}


class DeclaredAcme(AcmePlugin):
    """The Acme provider with its auth and idempotency header declared, not coded."""

    prepare_headers = None  # type: ignore[assignment]

    @docrelay.hookimpl
    def provider_info(self) -> ProviderInfo:
        info = super().provider_info()
        return attrs.evolve(
            info,
            hook_api=2,
            auth=OAuth2ClientCredentials(token_path="/token", body="json"),
            idempotency_header="Idempotency-Key",
            request_id_header="X-Request-Id",
        )


@pytest.fixture
def acme() -> Iterator[AcmeSandbox]:
    with AcmeSandbox() as sbx:
        yield sbx  # type: ignore[misc]


def _relay(tmp_path: Path, sandbox: AcmeSandbox, plugin: object) -> docrelay.Relay:
    return docrelay.Relay(
        store=f"sqlite:///{tmp_path / 'd.db'}",
        providers={"acme": {"base_url": sandbox.url, **SECRETS}},
        engine=dict(FAST_ENGINE),
        plugins=[plugin],
        autoload=False,
    )


def test_declared_oauth_and_idempotency_header_deliver(tmp_path: Path, acme: AcmeSandbox) -> None:
    """The core fetches the token (JSON body, cached for the second document), sends it and
    the key header; the sandbox deduplicates on that header."""
    with _relay(tmp_path, acme, DeclaredAcme()) as relay:
        relay.submit(Document(id="INV-1", provider="acme", payload=b"{}"))
        relay.run_until_settled(timeout=30)
        relay.submit(Document(id="INV-2", provider="acme", payload=b"{}"))
        relay.run_until_settled(timeout=30)
        first, second = relay.status("INV-1"), relay.status("INV-2")
        history = repr(relay.history("INV-1")) + json.dumps(first.to_dict())

    assert first.state == DocState.DELIVERED
    assert second.state == DocState.DELIVERED
    assert "acme-secret-value" not in history
    assert sorted(e["idempotency_key"] for e in acme.effects) == sorted([first.key, second.key])


# -- the auth schemes, at unit level (a stub instead of the engine) ---------------------------


class _Services:
    def __init__(self, answer: HttpResponse) -> None:
        self.answer = answer
        self.sent: list[HttpRequest] = []

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        return self.answer

    def token(self, ctx: Context, credential: str, fetch: Any) -> str:
        return str(fetch(ctx).value)

    def register_secret(self, value: str) -> None:
        from docrelay._redact import register_secret

        register_secret(value)


def _ctx(auth: object, settings: dict[str, Any], answer: HttpResponse | None = None) -> Any:
    info = ProviderInfo(
        name="p",
        environments={"prod": "https://api.p.example"},
        default_environment="prod",
        auth=auth,
        settings=(
            Setting("api_key", secret=True),
            Setting("producer"),
            Setting("client_id"),
            Setting("client_secret", secret=True),
        ),
    )
    services = _Services(answer or HttpResponse(status=500))
    ctx = Context(
        provider=info,
        settings=settings,
        base_url="https://api.p.example",
        environment="prod",
        services=services,
    )
    return ctx, services


def test_api_key_headers_register_secrets_and_refuse_a_missing_key() -> None:
    """Several header schemes apply together; a secret value is redacted, a plain one is
    not; a required setting that is empty is a config_error naming it."""
    auth = (ApiKeyHeader("ProducerId", setting="producer"), ApiKeyHeader("Key", "api_key"))
    ctx, _ = _ctx(auth, {"producer": "PR-1", "api_key": "k-0123456789-secret"})

    assert declared_headers(ctx) == {"ProducerId": "PR-1", "Key": "k-0123456789-secret"}
    assert "k-0123456789-secret" not in redact("key k-0123456789-secret")
    ctx, _ = _ctx(BearerToken("api_key"), {"api_key": " "})
    with pytest.raises(OutcomeError) as exc:
        declared_headers(ctx)
    assert exc.value.outcome.kind == OutcomeKind.CONFIG_ERROR
    assert "api_key" in (exc.value.outcome.message or "")


def test_oauth_form_body_with_basic_credentials_and_margin() -> None:
    """A form body, the credentials as HTTP basic auth, the scope, and the expiry minus the
    safety margin."""
    answer = HttpResponse(
        status=200, body=json.dumps({"access_token": "tok-abcdefgh12", "expires_in": 600}).encode()
    )
    scheme = OAuth2ClientCredentials(token_url="https://id.p.example/t", scope="ap",
                                     credentials="basic", margin=60)  # fmt: skip
    ctx, services = _ctx(scheme, {"client_id": "cid", "client_secret": "csecret-12345"}, answer)

    token = fetch_token(ctx, scheme)

    (sent,) = services.sent
    assert sent.url == "https://id.p.example/t"
    assert urllib.parse.parse_qs(sent.body.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["ap"],
    }
    assert (
        sent.headers["Authorization"] == "Basic " + base64.b64encode(b"cid:csecret-12345").decode()
    )
    assert token.value == "tok-abcdefgh12"
    assert 500 < token.expires_at - __import__("time").time() <= 540


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, OutcomeKind.CONFIG_ERROR), (429, OutcomeKind.THROTTLED), (503, OutcomeKind.RETRY)],
)
def test_oauth_token_failures_have_their_meaning(status: int, kind: OutcomeKind) -> None:
    """Refused credentials are config_error; a throttled or failing endpoint is transient."""
    scheme = OAuth2ClientCredentials(token_path="/oauth/token", body="json")
    answer = HttpResponse(status=status, body=b'{"error": "invalid_client"}')
    ctx, services = _ctx(scheme, {"client_id": "cid", "client_secret": "csecret-12345"}, answer)

    with pytest.raises(OutcomeError) as exc:
        fetch_token(ctx, scheme)

    assert exc.value.outcome.kind == kind
    assert json.loads(services.sent[0].body)["client_secret"] == "csecret-12345"
    assert services.sent[0].url == "https://api.p.example/oauth/token"


# -- the generic classification ---------------------------------------------------------------


def test_completion_fills_wait_and_request_id_and_caps_dates() -> None:
    """A plugin's outcome without a wait or request id gets them from the response; an
    HTTP date a year ahead is capped."""
    info = ProviderInfo(name="p", request_id_header="X-B2B-TRACE-ID")
    answer = HttpResponse(
        status=503,
        headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT", "X-B2B-TRACE-ID": "t-1"},
    )

    outcome = complete(Outcome(kind=OutcomeKind.RETRY, rule="p:5xx"), answer, info)

    assert outcome.wait == MAX_RETRY_AFTER
    assert outcome.request_id == "t-1"
    assert outcome.status == 503
    kept = complete(Outcome(kind=OutcomeKind.RETRY, wait=3.0, request_id="mine"), answer, info)
    assert (kept.wait, kept.request_id) == (3.0, "mine")


class _Raising:
    @docrelay.hookimpl
    def provider_info(self) -> ProviderInfo:
        return ProviderInfo(name="raiser", environments={"x": "http://127.0.0.1:1"},
                            default_environment="x")  # fmt: skip

    @docrelay.hookimpl
    def classify_response(self, response: HttpResponse | None) -> Outcome | None:
        raise ValueError("boom")


def test_a_raising_classifier_gets_the_generic_answer() -> None:
    """The classifier never decides by raising: the generic classification answers."""
    from docrelay.testing import classify

    outcome = classify(_Raising(), HttpResponse(status=429, headers={"Retry-After": "5"}))

    assert outcome.kind == OutcomeKind.THROTTLED
    assert outcome.wait == 5.0
    assert outcome.rule == "generic:classifier-error"


# -- the hook set ------------------------------------------------------------------------------


def test_every_hookspec_has_a_caller_and_a_documented_argument_list() -> None:
    """ProviderHooks is derived from the hookspecs; each hook documents each argument."""
    import inspect

    from docrelay import hookspecs

    hooks = PluginHost(autoload=False, plugins=[AcmePlugin()]).hooks("acme")
    for name in HOOK_NAMES:
        if name == "provider_info":
            continue
        assert name in hooks._callers, name
        spec = getattr(hookspecs, name)
        for arg in inspect.signature(spec).parameters:
            assert f":param {arg}:" in (spec.__doc__ or ""), (name, arg)


class _Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[DocState, DocState, str]] = []

    @docrelay.hookimpl
    def on_state_change(self, old: DocState, new: DocState, ctx: Context) -> None:
        assert isinstance(new, DocState)
        self.seen.append((old, new, ctx.provider.name))


def test_on_state_change_gets_typed_states_and_a_context(tmp_path: Path, acme: AcmeSandbox) -> None:
    observer = _Observer()
    relay = docrelay.Relay(
        store=f"sqlite:///{tmp_path / 'd.db'}",
        providers={"acme": {"base_url": acme.url, **SECRETS}},
        engine=dict(FAST_ENGINE),
        plugins=[AcmePlugin(), observer],
        autoload=False,
    )
    with relay:
        relay.submit(Document(id="INV-1", provider="acme", payload=b"{}"))
        relay.run_until_settled(timeout=30)

    assert (DocState.QUEUED, DocState.DELIVERED, "acme") in observer.seen


def test_find_documents_by_metadata_and_get_by_id(tmp_path: Path) -> None:
    """The store filters by metadata in SQL; a document of another provider is not found."""
    store = docrelay.open_store(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        for i, order in enumerate(["A", "B", "A"]):
            store.submit(Document(id=f"D-{i}", provider="p", payload=b"{}",
                                  metadata={"order": order, 'we"ird': "x"}), now=0.0)  # fmt: skip
        store.submit(
            Document(id="O-1", provider="q", payload=b"{}", metadata={"order": "A"}), now=0.0
        )

        found = store.find("p", None, {"order": "A"})
        weird = store.find("p", None, {'we"ird': "x"})
    finally:
        store.close()

    assert sorted(r.id for r in found) == ["D-0", "D-2"]
    assert len(weird) == 3
