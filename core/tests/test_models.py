"""Pure parts: the value objects, Retry-After parsing, the generic classifier, engine and
provider settings, and the configuration file."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin
from docrelay import (
    ConfigError,
    Document,
    EngineSettings,
    FieldError,
    HttpResponse,
    Outcome,
    OutcomeKind,
    RateLimit,
    Relay,
    TransportError,
    load_config,
)
from docrelay._builtins import classify_generic, default_key
from docrelay._engine import ProviderRuntime
from docrelay._models import retry_after_seconds, validate_document_id
from docrelay._redact import MASK, redact

# -- Document ---------------------------------------------------------------------------------

BASE = {"id": "inv-1", "provider": "acme", "payload": b"<Invoice/>", "kind": "document",
        "content_type": "application/xml", "metadata": {"erp": "42"}}  # fmt: skip


def test_revision_is_stable() -> None:
    """The same content gives the same revision, also with metadata given in another order."""
    a = Document(**{**BASE, "metadata": {"a": "1", "b": "2"}})
    b = Document(**{**BASE, "metadata": {"b": "2", "a": "1"}})

    assert a.revision == b.revision
    assert Document(**BASE).revision == Document(**BASE).revision


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload", b"<Invoice>2</Invoice>"),
        ("kind", "async"),
        ("content_type", "application/json"),
        ("metadata", {"erp": "43"}),
        ("metadata", {"erp": "42", "extra": "x"}),
    ],
)
def test_revision_changes_with_content(field: str, value: Any) -> None:
    """Payload, kind, content type and metadata each change the revision (and the default
    idempotency key); the id and provider are not part of the revision."""
    before = Document(**BASE)
    after = Document(**{**BASE, field: value})

    assert before.revision != after.revision
    assert default_key(before) != default_key(after)


def test_default_key_is_stable_and_per_document() -> None:
    """The default key is a function of provider, id and revision."""
    d = Document(**BASE)

    assert default_key(d) == default_key(Document(**BASE))
    assert default_key(d) != default_key(Document(**{**BASE, "id": "inv-2"}))
    assert default_key(d) != default_key(Document(**{**BASE, "provider": "beta"}))


def test_document_metadata_values_become_strings() -> None:
    """Metadata is a read-only mapping of strings."""
    d = Document(**{**BASE, "metadata": {"n": 1}})

    assert dict(d.metadata) == {"n": "1"}
    with pytest.raises(TypeError):
        d.metadata["n"] = "2"  # type: ignore[index]


@pytest.mark.parametrize("doc_id", ["a", "INV-2024-0001", "order_7.v2", "urn:x:1", "9", "a" * 200])
def test_valid_document_ids(doc_id: str) -> None:
    """Letters, digits, '.', '_', ':' and '-', up to 200 characters."""
    assert doc_id == validate_document_id(doc_id)
    assert doc_id == Document(id=doc_id, provider="acme", payload=b"").id


@pytest.mark.parametrize(
    "doc_id",
    ["", "-a", ".a", "a b", "a/b", "../etc", "é", "a\tb", "a" * 201, 42, None],
)
def test_invalid_document_ids(doc_id: Any) -> None:
    """Anything else is refused with a one-line ValueError."""
    with pytest.raises(ValueError, match="invalid document id"):
        validate_document_id(doc_id)
    with pytest.raises(ValueError, match="invalid document id"):
        Document(id=doc_id, provider="acme", payload=b"")


def test_document_id_with_trailing_newline_is_refused() -> None:
    """'inv-1\\n' is not a valid id (it would be a different file name, table key, URL)."""
    with pytest.raises(ValueError, match="invalid document id"):
        validate_document_id("inv-1\n")


# -- Outcome ----------------------------------------------------------------------------------


def test_outcome_round_trip() -> None:
    """Every field survives to_dict/from_dict, field errors included."""
    o = Outcome(
        kind=OutcomeKind.REJECTED, status=422, message="validation failed",
        field_errors=[FieldError(field="amount", message="must be positive", value="-1",
                                 severity="error", rule="BR-01"),
                      {"field": "currency", "message": "unknown"}],
        error_url="https://portal.example/e/1", request_id="r-1", trace_id="t-1", wait=2.5,
        provider_ref="p-1", provider_status="ERROR", resend=True, rule="acme:422",
    )  # fmt: skip

    assert o == Outcome.from_dict(o.to_dict())


def test_outcome_round_trip_with_an_error_without_field() -> None:
    """A field error that names no field (a whole-document error) survives the round trip."""
    o = Outcome(kind="rejected", field_errors=[FieldError(field=None, message="bad file")])

    assert o == Outcome.from_dict(o.to_dict())


def test_outcome_from_dict_tolerates_field_errors_without_field() -> None:
    """Field errors written without 'field' are read back with field None."""
    o = Outcome.from_dict({"kind": "rejected", "field_errors": [{"message": "bad file"}]})

    assert [(f.field, f.message) for f in o.field_errors] == [(None, "bad file")]


def test_outcome_to_dict_leaves_out_empty_fields() -> None:
    """None and False are left out; unknown keys are ignored when reading back."""
    o = Outcome(kind="retry")

    assert o.to_dict() == {"kind": "retry"}
    assert o == Outcome.from_dict({"kind": "retry", "future_field": 1})


def test_outcome_kinds_and_success() -> None:
    """delivered, duplicate and no_action are the successes; an unknown kind is refused."""
    assert {k for k in OutcomeKind if Outcome(kind=k).is_success} == {
        OutcomeKind.DELIVERED, OutcomeKind.DUPLICATE, OutcomeKind.NO_ACTION}  # fmt: skip
    with pytest.raises(ValueError):
        Outcome(kind="maybe")


# -- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        ("Mon, 99 Foo 2024 25:61:00 GMT", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Seconds are taken as they are; negative, non-finite and garbage values are None."""
    assert expected == retry_after_seconds(value, time.time())


def test_retry_after_http_date() -> None:
    """An HTTP date is turned into seconds from now; a date in the past into 0."""
    now = 1_700_000_000.0
    future = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(now - 30, tz=UTC), usegmt=True)

    assert retry_after_seconds(future, now) == 30.0
    assert retry_after_seconds(past, now) == 0.0


# -- the generic classifier -------------------------------------------------------------------


def _resp(status: int, body: bytes = b"", **headers: str) -> HttpResponse:
    return HttpResponse(status=status, body=body, headers=headers)


@pytest.mark.parametrize(
    ("response", "error", "kind", "rule"),
    [
        (None, None, "unknown", "generic:none"),
        (None, TransportError("tls", "certificate verify failed", sent=False), "config_error",
         "generic:tls"),
        (None, TransportError("read_timeout", "read timed out", sent=True), "unknown",
         "generic:read_timeout"),
        (None, TransportError("disconnected", "reset", sent=True), "unknown",
         "generic:disconnected"),
        (None, TransportError("connect", "refused", sent=False), "retry", "generic:connect"),
        (None, TransportError("connect_timeout", "timeout", sent=False), "retry",
         "generic:connect_timeout"),
        (_resp(200), None, "delivered", "generic:2xx"),
        (_resp(201), None, "delivered", "generic:2xx"),
        (_resp(204), None, "delivered", "generic:2xx"),
        (_resp(302, Location="https://login.example/"), None, "config_error", "generic:3xx"),
        (_resp(401), None, "reauth", "generic:401"),
        (_resp(403), None, "config_error", "generic:403"),
        (_resp(404), None, "config_error", "generic:404"),
        (_resp(405), None, "config_error", "generic:405"),
        (_resp(406), None, "config_error", "generic:406"),
        (_resp(407), None, "config_error", "generic:407"),
        (_resp(415), None, "config_error", "generic:415"),
        (_resp(408), None, "retry", "generic:408"),
        (_resp(412), None, "stale", "generic:412"),
        (_resp(429), None, "throttled", "generic:429"),
        (_resp(400), None, "rejected", "generic:4xx"),
        (_resp(409), None, "rejected", "generic:4xx"),
        (_resp(413), None, "rejected", "generic:4xx"),
        (_resp(422), None, "rejected", "generic:4xx"),
        (_resp(500), None, "retry", "generic:5xx"),
        (_resp(503), None, "retry", "generic:5xx"),
        (_resp(599), None, "retry", "generic:5xx"),
        (_resp(102), None, "unknown", "generic:unexpected"),
    ],
)  # fmt: skip
def test_classify_generic(
    response: HttpResponse | None, error: TransportError | None, kind: str, rule: str
) -> None:
    """Every branch of the generic HTTP classifier."""
    outcome = classify_generic(response, error)

    assert (kind, rule) == (outcome.kind.value, outcome.rule)
    if response is not None:
        assert response.status == outcome.status


def test_classify_generic_keeps_wait_and_messages() -> None:
    """Retry-After becomes the wait of 429 and 5xx; the provider's message is kept from JSON
    or plain text, HTML is not quoted; a redirect names its target."""
    assert classify_generic(_resp(429, **{"Retry-After": "7"}), None).wait == 7.0
    assert classify_generic(_resp(503, **{"Retry-After": "3"}), None).wait == 3.0
    assert classify_generic(_resp(429), None).wait is None
    assert classify_generic(_resp(400, b'{"message": "bad amount"}'), None).message == "bad amount"
    assert classify_generic(_resp(401, b'{"error": "invalid_client"}'),
                                                None).message == "invalid_client"  # fmt: skip
    assert classify_generic(_resp(400, b"Bad thing"), None).message == "Bad thing"
    assert classify_generic(_resp(500, b"<html><body>oops</body></html>"), None).message is None
    assert classify_generic(_resp(400, b'{"message": "cut'), None).message == '{"message": "cut'
    msg = classify_generic(_resp(301, Location="https://elsewhere.example/x"), None).message
    assert msg is not None
    assert "https://elsewhere.example/x" in msg


def test_generic_outcome_is_the_generic_classification_in_public() -> None:
    """``docrelay.helpers.generic_outcome`` answers what the generic classifier answers, for
    a plugin that keeps the generic kind and adds its provider's words."""
    from docrelay.helpers import generic_outcome

    answers = [(_resp(403, b'{"message": "no"}'), None), (_resp(503), None),
               (None, TransportError("connect", "refused", sent=False))]  # fmt: skip
    for response, error in answers:
        assert generic_outcome(response, error) == classify_generic(response, error)
    assert generic_outcome(_resp(429, **{"Retry-After": "7"})).wait == 7.0


# -- EngineSettings ---------------------------------------------------------------------------


def test_engine_settings_from_mapping() -> None:
    """Known keys are taken and typed like their defaults; pause_seconds may be None."""
    s = EngineSettings.from_mapping(
        {"max_attempts": 3.0, "lease_seconds": 5, "pause_seconds": None}
    )

    assert (s.max_attempts, s.lease_seconds, s.pause_seconds) == (3, 5.0, None)
    assert isinstance(s.max_attempts, int)
    assert EngineSettings() == EngineSettings.from_mapping({})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_attempt": 3}, "unknown \\[engine\\] setting"),
        ({"max_attempts": "3"}, "must be a number"),
        ({"max_attempts": True}, "must be a number"),
        ({"lease_seconds": None}, "must be a number"),
        ({"read_timeout": [1]}, "must be a number"),
    ],
)
def test_engine_settings_errors(data: dict[str, Any], message: str) -> None:
    """Unknown keys and non-numbers are configuration errors."""
    with pytest.raises(ConfigError, match=message):
        EngineSettings.from_mapping(data)


# -- ProviderRuntime --------------------------------------------------------------------------

INFO = AcmePlugin().provider_info()
CREDS = {"client_id": "cid", "client_secret": "runtime-secret-1"}


def test_runtime_build_defaults() -> None:
    """The default environment's URL, the engine's timeouts, the provider's limits."""
    rt = ProviderRuntime.build(INFO, CREDS, EngineSettings())

    assert (rt.base_url, rt.environment) == ("http://127.0.0.1:8799", "sandbox")
    assert (rt.connect_timeout, rt.read_timeout) == (5.0, 30.0)
    assert rt.max_payload_bytes == 1_000_000
    assert frozenset({"127.0.0.1"}) == rt.allowed_hosts
    assert redact("runtime-secret-1") == MASK, "secret settings are registered for redaction"


def test_runtime_build_overrides() -> None:
    """base_url, rate_limit, timeouts and the payload limit from the settings."""
    rt = ProviderRuntime.build(
        INFO,
        {**CREDS, "base_url": "https://api.acme.example/v1", "rate_limit": "100/60",
         "read_timeout": 3, "max_payload_bytes": 10, "webhook_secret": "hook-secret-7777-abcd"},
        EngineSettings(),
    )  # fmt: skip

    assert rt.base_url == "https://api.acme.example/v1"
    assert RateLimit(100, 60.0) == rt.rate
    assert (rt.read_timeout, rt.max_payload_bytes, rt.webhook_secret) == (
        3.0, 10, "hook-secret-7777-abcd")  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**CREDS, "colour": "red"}, "unknown setting\\(s\\) for provider acme: colour"),
        ({"client_secret": "runtime-secret-1"}, "needs setting 'client_id'"),
        ({"client_id": "cid", "client_secret": ""}, "needs setting 'client_secret'"),
        ({**CREDS, "base_url": "http://api.acme.example"}, "plain http to api.acme.example"),
        ({**CREDS, "base_url": "ftp://api.acme.example"}, "invalid base_url"),
        ({**CREDS, "env": "production"}, "no environment 'production'"),
        ({**CREDS, "rate_limit": "fast"}, "rate_limit must look like"),
        ({**CREDS, "rate_limit": "5/x"}, "rate_limit must look like"),
    ],
)
def test_runtime_build_errors(raw: dict[str, Any], message: str) -> None:
    """Unknown settings, missing required ones, plain http to a remote host, bad URLs,
    unknown environments and malformed rate limits are configuration errors."""
    with pytest.raises(ConfigError, match=message):
        ProviderRuntime.build(INFO, raw, EngineSettings())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.53"])
def test_runtime_plain_http_to_loopback_is_allowed(host: str) -> None:
    """Loopback sandboxes need no TLS."""
    rt = ProviderRuntime.build(INFO, {**CREDS, "base_url": f"http://{host}:9"}, EngineSettings())

    assert rt.base_url == f"http://{host}:9"


def test_runtime_plain_http_allowed_when_asked() -> None:
    """allow_insecure_http lets plain http to a remote host through."""
    rt = ProviderRuntime.build(
        INFO, {**CREDS, "base_url": "http://acme.internal", "allow_insecure_http": True},
        EngineSettings(),
    )  # fmt: skip

    assert rt.base_url == "http://acme.internal"


def test_runtime_credential_is_not_secret() -> None:
    """The credential id used for rate limits and tokens does not contain the setting."""
    rt = ProviderRuntime.build(INFO, CREDS, EngineSettings())
    other = ProviderRuntime.build(INFO, {**CREDS, "client_id": "cid2"}, EngineSettings())

    assert "cid" not in rt.credential
    assert rt.credential != other.credential


# -- configuration ----------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "docrelay.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_config_missing_file(tmp_path: Path) -> None:
    """An explicit path that does not exist is an error; no file at all gives defaults."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_config_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ./docrelay.toml the defaults apply."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config()

    assert (cfg.store_url, dict(cfg.providers), cfg.path) == ("sqlite:///docrelay.db", {}, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[store\nurl = 1", "invalid TOML"),
        ("[stores]\nurl = 'x'\n[extra]\n", "unknown section\\(s\\): extra, stores"),
        ("store = 3\n", "\\[store\\] must be a table"),
        ("[plugins]\nenabled = 'acme'\n", "enabled must be a list"),
        ("[plugins]\nblocked = []\n", "unknown \\[plugins\\] key"),
        ("[providers]\nacme = 1\n", "must be a table"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    """Malformed files give one clear ConfigError."""
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text), environ={})


def test_config_env_expansion(tmp_path: Path) -> None:
    """${ENV} references are resolved, registered as secrets, and remembered as references."""
    p = _write(
        tmp_path,
        """
[store]
url = "sqlite:///${DB_DIR}/relay.db"
[engine]
max_attempts = 3
[plugins]
disabled = ["procuros"]
[providers.acme]
base_url = "http://127.0.0.1:9"
client_id = "cid"
client_secret = "${ACME_SECRET}"
""",
    )
    cfg = load_config(p, environ={"DB_DIR": "/data", "ACME_SECRET": "config-secret-xyz"})

    assert cfg.store_url == "sqlite:////data/relay.db"
    assert dict(cfg.engine) == {"max_attempts": 3}
    assert cfg.plugins_disabled == ("procuros",)
    assert cfg.providers["acme"]["client_secret"] == "config-secret-xyz"
    assert frozenset({"client_secret"}) == cfg.references["acme"]
    assert redact("config-secret-xyz") == MASK


def test_config_unset_env_var(tmp_path: Path) -> None:
    """A reference to an unset variable names the variable and the place; it is resolved
    when the provider is used, so the configuration still loads (readers need no secret)."""
    p = _write(tmp_path, "[providers.acme]\nclient_secret = '${NOT_SET_ANYWHERE}'\n")

    cfg = load_config(p, environ={})
    assert "NOT_SET_ANYWHERE is not set" in cfg.unresolved["acme"]
    assert "[providers.acme] client_secret" in cfg.unresolved["acme"]


def test_relay_from_config_refuses_inline_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret setting given inline is refused; the same value by reference is accepted."""
    monkeypatch.setenv("DOCRELAY_DISABLE_PLUGIN_AUTOLOAD", "1")
    store = f"sqlite:///{tmp_path / 'r.db'}"
    inline = _write(
        tmp_path,
        f"[store]\nurl = '{store}'\n[providers.acme]\nbase_url = 'http://127.0.0.1:9'\n"
        "client_id = 'cid'\nclient_secret = 'inline-secret-1'\n",
    )
    with pytest.raises(ConfigError, match="'client_secret' is a secret"):
        Relay.from_config(load_config(inline, environ={}), plugins=[AcmePlugin()])

    inline.write_text(
        f"[store]\nurl = '{store}'\n[providers.acme]\nbase_url = 'http://127.0.0.1:9'\n"
        "client_id = 'cid'\nclient_secret = '${ACME_SECRET}'\n",
        encoding="utf-8",
    )
    relay = Relay.from_config(
        load_config(inline, environ={"ACME_SECRET": "ref-secret-1"}), plugins=[AcmePlugin()]
    )
    try:
        assert list(relay.host.providers) == ["acme"]
    finally:
        relay.close()
