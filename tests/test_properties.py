"""Bad input from providers: every classifier, fed arbitrary answers, gives a valid outcome.

Each installed provider's ``classify_response`` (through the engine's hook facade, with a real
:class:`~docrelay.Context` from ``Relay(...).engine.context(runtime)``) gets arbitrary status
codes, headers and bodies (HTML error pages, truncated or invalid JSON, provider-shaped JSON
with wrong types, binary, empty, bodies of MAX_BODY_BYTES marked truncated, wrong content
types) and transport errors. It must never raise (the facade would hide a raise behind the
generic classifier: its rule ``generic:classifier-error`` counts as a failure here), and the
outcome must be an :class:`~docrelay.Outcome` that survives the store's round trip. Webhook
parsers fed arbitrary bodies return a notification or ``None``, or raise ``ValueError`` (the
webhook answers 400), nothing else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from docrelay import Document, Outcome, OutcomeKind, Relay
from docrelay._context import Context
from docrelay._host import PluginHost
from docrelay._models import MAX_BODY_BYTES, HttpResponse, Notification, TransportError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROVIDERS = ("econnect", "procuros", "siesmart", "ebh", "aqi")
SETTINGS: dict[str, dict[str, Any]] = {
    "econnect": {"client_id": "c", "client_secret": "prop-secret-1", "party_id": "NL:KVK:1"},
    "procuros": {"api_token": "prop-secret-2"},
    "siesmart": {"client_id": "c", "client_secret": "prop-secret-3"},
    "ebh": {"producer_id": "P1", "provider_key": "prop-secret-4"},
    "aqi": {"subscription_key": "prop-secret-5"},
}
DOCS = {
    "econnect": Document(id="p-ec", provider="econnect", kind="invoice", payload=b"<Invoice/>"),
    "procuros": Document(id="p-pr", provider="procuros", kind="order", payload=b"{}"),
    "siesmart": Document(id="p-ss", provider="siesmart", kind="proposal", payload=b"{}"),
    "ebh": Document(id="p-eb", provider="ebh", kind="invoice", payload=b"<x/>"),
    "aqi": Document(id="p-aq", provider="aqi", kind="order", payload=b"{}"),
}
BASE = "http://127.0.0.1:9"  # never contacted: classifiers are pure


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db = tmp_path_factory.mktemp("props") / "props.db"
    relay = Relay(
        f"sqlite:///{db}",
        providers={n: {"base_url": BASE, **s} for n, s in SETTINGS.items()},
    )
    host = PluginHost()
    out = {
        name: (host.hooks(name), relay.engine.context(relay.engine.runtime(name)))
        for name in PROVIDERS
    }
    yield out
    relay.close()


# -- strategies -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=12,
)
PROVIDER_KEYS = [
    "message", "Message", "errorUrl", "errors", "code", "requestId", "helpLink", "title",
    "detail", "traceId", "status", "Id", "Status", "ValidationResults", "ValidationMessage",
    "ValidatedInvoiceUrl", "internalRequestId", "description", "type", "procurosTransactionId",
    "id", "preconditionViolations", "decision", "error", "error_description", "statusCode",
    "access_token", "expires_in", "content", "parameters", "details", "result", "errorDetails",
]  # fmt: skip
shaped_json = st.dictionaries(st.sampled_from(PROVIDER_KEYS), json_values, max_size=6)


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


html_page = st.builds(
    lambda title, code: (
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{code} "
        f"{title}</h1><p>nginx</p></body></html>"
    ).encode(),
    st.text(max_size=30),
    st.integers(100, 599),
)
truncated_json = st.builds(
    lambda v, cut: _dump(v)[: max(0, len(_dump(v)) - cut)], shaped_json, st.integers(1, 20)
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    html_page,
    shaped_json.map(_dump),
    json_values.map(_dump),
    truncated_json,
    st.sampled_from([b"null", b"[]", b"{}", b'"x"', b"1e999", b'{"message":', b"\xff\xfe{"]),
)
huge = st.builds(
    lambda chunk: (chunk * (MAX_BODY_BYTES // len(chunk) + 1))[:MAX_BODY_BYTES],
    st.binary(min_size=1, max_size=32) | html_page | shaped_json.map(_dump),
)
content_types = st.sampled_from(
    ["application/json", "application/problem+json", "text/html", "text/plain",
     "application/xml", "application/octet-stream", "multipart/form-data", "", "json; charset=x"]
)  # fmt: skip
retry_after = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "-5",
            "nan",
            "inf",
            "1e308",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "soon",
            "",
            "99999999999999999999",
        ]
    ),
    st.integers(-10, 10**6).map(str),
    st.text(max_size=20),
)
header_maps = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": content_types,
        "Retry-After": retry_after,
        "Location": st.sampled_from(
            [
                "http://198.51.100.7/x/ValidationRequest/1",
                f"{BASE}/ebh/validations/v2/ValidationRequest/0b7c0d4e-5f4a-4b55-9b1e-123456789abc",
                "/relative",
                "::",
                "",
            ]
        ),
        "ETag": st.text(max_size=30),
        "X-B2B-TRACE-ID": st.text(max_size=30),
        "OperationId": st.text(max_size=30),
        "WWW-Authenticate": st.text(max_size=30),
    },
).map(lambda h: {k: v.replace("\r", "").replace("\n", "") for k, v in h.items()})
statuses = st.one_of(
    st.sampled_from(
        [
            200,
            201,
            202,
            204,
            301,
            400,
            401,
            403,
            404,
            405,
            406,
            408,
            409,
            412,
            413,
            415,
            422,
            429,
            500,
            502,
            503,
            504,
        ]
    ),
    st.integers(100, 599),
)
responses = st.one_of(
    st.builds(HttpResponse, status=statuses, headers=header_maps, body=bodies, url=st.just(BASE)),
    st.builds(
        HttpResponse,
        status=statuses,
        headers=header_maps,
        body=huge,
        url=st.just(BASE),
        truncated=st.just(True),
    ),
)
errors = st.builds(
    TransportError,
    kind=st.sampled_from(
        [
            "connect",
            "connect_timeout",
            "read_timeout",
            "disconnected",
            "tls",
            "invalid_url",
            "other",
            "weird",
        ]
    ),
    message=st.text(max_size=80),
    sent=st.booleans(),
)


def _check(outcome: Any, response: HttpResponse | None, error: TransportError | None) -> None:
    assert isinstance(outcome, Outcome), outcome
    assert isinstance(outcome.kind, OutcomeKind)
    assert outcome.rule != "generic:classifier-error", "the provider's classifier raised"
    assert not (outcome.rule or "").endswith("unclassifiable"), (
        "the classifier caught its own raise"
    )
    if outcome.wait is not None:
        assert math.isfinite(outcome.wait), outcome.wait
        assert outcome.wait >= 0, outcome.wait
    assert outcome.message is None or isinstance(outcome.message, str)
    # what the store keeps must come back the same
    assert Outcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome
    if response is not None and response.status >= 500:
        assert not outcome.is_success, f"{response.status} taken as {outcome.kind}"
    if error is not None:
        assert not outcome.is_success, f"a transport error taken as {outcome.kind}"
        if not error.sent:
            assert outcome.kind in (OutcomeKind.RETRY, OutcomeKind.CONFIG_ERROR), outcome


def _ctx(base: Context, with_doc: bool, name: str) -> Context:
    ctx = Context(
        provider=base.provider, settings=base.settings, base_url=base.base_url,
        environment=base.environment, services=base._services,
    )  # fmt: skip
    if with_doc:
        ctx.document = DOCS[name]
        ctx.key = "0b7c0d4e5f4a4b559b1e123456789abc"
        ctx.attempt = 1
    return ctx


COMMON = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", PROVIDERS)
@COMMON
@given(response=responses, with_doc=st.booleans())
def test_classifier_never_raises_on_any_response(
    contexts: dict[str, Any], name: str, response: HttpResponse, with_doc: bool
) -> None:
    hooks, base = contexts[name]
    outcome = hooks.classify_response(response, None, _ctx(base, with_doc, name))
    _check(outcome, response, None)


@pytest.mark.parametrize("name", PROVIDERS)
@settings(max_examples=40, deadline=None)
@given(error=errors, with_doc=st.booleans())
def test_classifier_never_raises_on_transport_errors(
    contexts: dict[str, Any], name: str, error: TransportError, with_doc: bool
) -> None:
    hooks, base = contexts[name]
    outcome = hooks.classify_response(None, error, _ctx(base, with_doc, name))
    _check(outcome, None, error)


@pytest.mark.parametrize("name", PROVIDERS)
def test_classifier_without_response_or_error(contexts: dict[str, Any], name: str) -> None:
    """Neither a response nor an error (a broken plugin upstream): still an outcome."""
    hooks, base = contexts[name]
    outcome = hooks.classify_response(None, None, _ctx(base, True, name))
    assert isinstance(outcome, Outcome)
    assert isinstance(outcome.kind, OutcomeKind)


@pytest.mark.parametrize("name", PROVIDERS)
@settings(max_examples=60, deadline=None)
@given(body=bodies | huge, content_type=content_types)
def test_webhook_parser_takes_any_body(
    contexts: dict[str, Any], name: str, body: bytes, content_type: str
) -> None:
    """A webhook body is parsed, ignored (``None``) or refused with ValueError (400)."""
    hooks, base = contexts[name]
    try:
        result = hooks.parse_notification(
            body, {"Content-Type": content_type}, _ctx(base, False, name)
        )
    except ValueError:
        return
    assert result is None or isinstance(result, Notification), result
    if isinstance(result, Notification):
        _check(result.outcome, None, None)


@pytest.mark.parametrize(
    "name",
    PROVIDERS,
)
def test_secret_echoed_by_the_provider_never_reaches_the_stored_outcome(
    contexts: dict[str, Any], name: str
) -> None:
    """A provider echoing a configured secret in its error body: the outcome the store keeps
    hides it (the engine redacts every outcome centrally, whatever the classifier copied)."""
    from docrelay._redact import redact_outcome

    hooks, base = contexts[name]
    secret = next(v for k, v in SETTINGS[name].items() if "secret" in k or "key" in k
                  or "token" in k)  # fmt: skip
    body = _dump({k: f"refused {secret}" for k in PROVIDER_KEYS if k != "errors"}
                 | {"errors": {"f": [secret]}})  # fmt: skip
    for status in (400, 401, 403, 404, 409, 412, 422, 429, 500, 503):
        response = HttpResponse(status=status, headers={"Content-Type": "application/json",
                                "X-B2B-TRACE-ID": secret, "OperationId": secret},
                                body=body, url=BASE)  # fmt: skip
        outcome = redact_outcome(hooks.classify_response(response, None, _ctx(base, True, name)))
        assert secret not in json.dumps(outcome.to_dict()), (name, status)
