"""The template provider: its classifier as a table, its sandbox over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import docrelay_template
import pytest
import requests
from docrelay import HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.testing import classify as classify_in_core
from docrelay_template import provider_info
from docrelay_template.sandbox import TemplateSandbox

API_KEY = "sandbox-key"


def classify(response: HttpResponse | None, error: TransportError | None) -> Outcome:
    """The outcome the engine records: the plugin's classifier, then docrelay's generic one."""
    return classify_in_core(docrelay_template, response, error)


def _response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
    return HttpResponse(status=status, body=raw, headers=headers or {})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"id": "d-1", "status": "received"}, OutcomeKind.DELIVERED),
        (201, {"id": "d-1", "status": "received"}, OutcomeKind.DELIVERED),
        (409, {"message": "document already received", "id": "d-1"}, OutcomeKind.DUPLICATE),
        (400, {"message": "bad", "errors": [{"field": "body", "message": "x"}]}, "rejected"),
        (413, {"message": "payload larger than 1000000 bytes"}, OutcomeKind.REJECTED),
        (422, {"message": "invalid", "errors": [{"field": "number", "message": "x"}]}, "rejected"),
        (401, {"message": "missing or invalid API key"}, OutcomeKind.CONFIG_ERROR),
        (403, {"message": "forbidden"}, OutcomeKind.CONFIG_ERROR),
        (429, {"message": "rate limit exceeded"}, OutcomeKind.THROTTLED),
        (500, {"message": "temporarily unavailable"}, OutcomeKind.RETRY),
        (503, b"<html>Service Unavailable</html>", OutcomeKind.RETRY),
    ],
)
def test_classify_documented_answers(status: int, body: Any, expected: str) -> None:
    """Every documented status maps to its outcome, keeping the status code and the
    provider's request id."""
    answer = _response(status, body)
    answer = HttpResponse(status=status, body=answer.body, headers={"X-Request-Id": "r-7"})
    outcome = classify(answer, None)

    assert expected == outcome.kind
    assert outcome.request_id == "r-7"
    assert status == outcome.status


def test_classify_keeps_field_errors_and_provider_ref() -> None:
    """A rejection keeps the provider's message and every field error; a success its id."""
    rejected = classify(
        _response(
            422,
            {
                "message": "the document is invalid",
                "errors": [{"field": "number", "message": "a document number is required"}],
                "errorUrl": "https://portal.template-provider.example/errors/e-1",
            },
        ),
        None,
    )
    delivered = classify(_response(201, {"id": "d-42", "status": "received"}), None)

    assert rejected is not None
    assert rejected.message == "the document is invalid"
    assert rejected.error_url == "https://portal.template-provider.example/errors/e-1"
    assert [(fe.field, fe.message) for fe in rejected.field_errors] == [
        ("number", "a document number is required")
    ]
    assert delivered is not None
    assert delivered.provider_ref == "d-42"


def test_classify_throttled_waits_as_asked() -> None:
    """429 and 503 keep Retry-After as the wait."""
    throttled = classify(_response(429, {}, {"Retry-After": "7"}), None)
    unavailable = classify(_response(503, {}, {"retry-after": "2"}), None)

    assert throttled is not None
    assert throttled.wait == 7.0
    assert unavailable is not None
    assert unavailable.wait == 2.0


@pytest.mark.parametrize(
    ("sent", "expected"), [(False, OutcomeKind.RETRY), (True, OutcomeKind.UNKNOWN)]
)
def test_classify_transport_errors(sent: bool, expected: OutcomeKind) -> None:
    """Before the request went out it is safe to retry; after, the effect is unknown."""
    error = TransportError(kind="read_timeout" if sent else "connect", message="x", sent=sent)

    outcome = classify(None, error)

    assert outcome is not None
    assert expected == outcome.kind


@pytest.mark.parametrize(
    "body", [b"", b"{", b"\x00\xff\xfe", b"[1, 2]", b'{"errors": [1, null, {}]}', b"x" * 100_000]
)
@pytest.mark.parametrize("status", [200, 400, 409, 422, 429, 500, 404, 302])
def test_classify_never_raises(status: int, body: bytes) -> None:
    """Any body, however broken, gives an outcome with the status."""
    outcome = classify(_response(status, body), None)

    assert outcome.status == status


def test_classify_leaves_undocumented_statuses_to_the_generic_classifier() -> None:
    """404 is not in the provider's table: the plugin answers ``None``, docrelay decides."""
    from docrelay_template._classify import classify as table

    assert table(_response(404, {"message": "no route"})) is None
    assert classify(_response(404, {"message": "no route"}), None).rule == "generic:404"


def test_provider_info_declares_auth_keys_and_sandbox() -> None:
    """The provider declares itself, its auth, its idempotency header and its sandbox."""
    info = provider_info()

    assert info.name == "template"
    assert info.default_environment in info.environments
    assert info.setting("api_key") is not None
    assert info.setting("api_key").secret  # type: ignore[union-attr]
    assert info.idempotency_header == "Idempotency-Key"
    assert info.sandbox is TemplateSandbox


@pytest.fixture
def sandbox() -> Iterator[TemplateSandbox]:
    with TemplateSandbox() as sbx:
        yield sbx  # type: ignore[misc]


def _post(
    sandbox: TemplateSandbox, body: bytes, key: str | None = "k-1", api_key: str = API_KEY
) -> requests.Response:
    headers = {"Content-Type": "application/json", "X-Api-Key": api_key}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(f"{sandbox.url}/v1/documents", data=body, headers=headers, timeout=5)


def test_sandbox_takes_a_document_once(sandbox: TemplateSandbox) -> None:
    """The same Idempotency-Key twice: 201, then 409 with the same id; one effect."""
    first = _post(sandbox, b'{"number": "INV-1"}')
    second = _post(sandbox, b'{"number": "INV-1"}')

    assert (first.status_code, second.status_code) == (201, 409)
    assert first.json()["id"] == second.json()["id"]
    assert [(e["kind"], e["key"]) for e in sandbox.effects] == [("document", "k-1")]


def test_sandbox_new_key_is_a_new_document(sandbox: TemplateSandbox) -> None:
    """Another key is another document (a corrected revision)."""
    _post(sandbox, b'{"number": "INV-1"}', key="k-1")
    _post(sandbox, b'{"number": "INV-1", "total": 2}', key="k-2")

    assert [e["key"] for e in sandbox.effects] == ["k-1", "k-2"]


@pytest.mark.parametrize(
    ("body", "key", "api_key", "status"),
    [
        (b'{"number": "INV-1"}', "k", "wrong", 401),
        (b'{"number": "INV-1"}', None, API_KEY, 400),
        (b'{"total": 3}', "k", API_KEY, 422),
        (b"{not json", "k", API_KEY, 400),
        (b"", "k", API_KEY, 422),
    ],
)
def test_sandbox_refuses(
    sandbox: TemplateSandbox, body: bytes, key: str | None, api_key: str, status: int
) -> None:
    """Bad credentials, a missing key and invalid documents are refused without effect."""
    response = _post(sandbox, body, key=key, api_key=api_key)

    assert status == response.status_code
    assert sandbox.effects == []


def test_sandbox_refuses_too_large_payloads() -> None:
    """Bodies over ``max_payload`` get 413."""
    with TemplateSandbox(max_payload=10) as sbx:
        response = _post(sbx, b'{"number": "INV-1"}')  # type: ignore[arg-type]

    assert response.status_code == 413


def test_sandbox_dropped_answer_still_takes_the_document(sandbox: TemplateSandbox) -> None:
    """With the ``drop`` fault the work is done but the answer is lost; the resend is 409."""
    sandbox.set_faults(["drop*1"])
    with pytest.raises(requests.ConnectionError):
        _post(sandbox, b'{"number": "INV-1"}')
    resent = _post(sandbox, b'{"number": "INV-1"}')

    assert resent.status_code == 409
    assert len(sandbox.effects) == 1


def test_sandbox_throttle_fault_answers_429_with_retry_after(sandbox: TemplateSandbox) -> None:
    """The ``throttle`` fault answers 429 with the Retry-After it was given, and no effect."""
    sandbox.set_faults(["throttle*1:3"])
    response = _post(sandbox, b'{"number": "INV-1"}')

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert sandbox.effects == []


def test_sandbox_serves_the_stored_document(sandbox: TemplateSandbox) -> None:
    """``GET /v1/documents/{id}`` shows what the provider stored."""
    doc_id = _post(sandbox, b'{"number": "INV-1"}').json()["id"]

    got = requests.get(
        f"{sandbox.url}/v1/documents/{doc_id}", headers={"X-Api-Key": API_KEY}, timeout=5
    )

    assert got.status_code == 200
    assert got.json()["status"] == "received"
