"""The eConnect classifier, one documented answer at a time (seed 000, providers.md 1.4-1.6).

``outcome(...)`` is what the engine records (the plugin's classifier, then docrelay's generic
classification and completion); ``classify(...)`` is the plugin's own table."""

from __future__ import annotations

import json
from typing import Any

import docrelay_econnect as plugin
import pytest
from docrelay import HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.testing import classify as classify_in_core
from docrelay_econnect._classify import classify, parse_error_body

DOC_ID = "5618b40a-822d-4e74-8894-b489617dbaa4"
HELP = "https://psb.econnect.eu/endpoints/overview.html"


def error_body(status: int, message: str, request_id: str = "41cd55e3f0a94ac2") -> bytes:
    """The documented error shape (providers.md 1.6)."""
    return json.dumps(
        {
            "helpLink": HELP,
            "message": message,
            "code": f"API{status}",
            "requestId": request_id,
            "dateTime": "2024-04-13T15:46:29.48+00:00",
        }
    ).encode()


def outcome(response: HttpResponse | None, error: TransportError | None = None) -> Outcome:
    return classify_in_core(plugin, response, error)


def resp(status: int, body: bytes | str = b"", **headers: str) -> HttpResponse:
    if isinstance(body, str):
        body = body.encode()
    h: dict[str, Any] = {"Content-Type": "application/json"} if body[:1] in (b"{", b"[") else {}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return HttpResponse(status=status, body=body, headers=h)


def test_200_is_delivered_with_the_document_id_as_reference() -> None:
    """200 OK `{"id": documentId}` (E-SALES example) -> delivered, provider_ref = id."""
    out = classify(resp(200, json.dumps({"id": DOC_ID})), document_id="ignored-key")
    assert out is not None
    assert out.kind == OutcomeKind.DELIVERED
    assert out.provider_ref == DOC_ID
    assert outcome(resp(200, json.dumps({"id": DOC_ID}))).status == 200
    assert out.rule == "econnect:200-delivered"


def test_200_without_body_falls_back_to_the_sent_document_id() -> None:
    out = classify(resp(200, b""), document_id=DOC_ID)
    assert out is not None
    assert (out.kind, out.provider_ref) == (OutcomeKind.DELIVERED, DOC_ID)


def test_409_is_duplicate_counted_as_delivered() -> None:
    """409 CONFLICT: "The request is already processed and thus duplicated." (seed 000)."""
    out = classify(resp(409, b""), document_id=DOC_ID)
    assert out is not None
    assert out.kind == OutcomeKind.DUPLICATE
    assert out.is_success
    assert out.provider_ref == DOC_ID
    assert out.rule == "econnect:409-duplicate"
    assert out.message is not None


def test_409_with_an_error_body_keeps_its_words() -> None:
    body = error_body(409, f"Document '{DOC_ID}' is already processed.")
    out = classify(resp(409, body), document_id=DOC_ID)
    assert out is not None
    assert out.kind == OutcomeKind.DUPLICATE
    assert out.message == f"API409: Document '{DOC_ID}' is already processed."
    assert out.request_id == "41cd55e3f0a94ac2"


def test_400_is_rejected_with_message_code_help_link_and_request_id() -> None:
    """400 BAD REQUEST: validation, syntax or other client error; not retryable."""
    body = error_body(400, "The document is not a valid UBL 2.1 invoice.", "req-400-abc")
    out = outcome(resp(400, body))
    assert out.kind == OutcomeKind.REJECTED
    assert out.status == 400
    assert out.message == "API400: The document is not a valid UBL 2.1 invoice."
    assert out.error_url == HELP
    assert out.request_id == "req-400-abc"
    assert out.rule == "econnect:400-rejected"


def test_400_problem_details_become_field_errors() -> None:
    """An ASP.NET validation body (not documented by eConnect, but likely from a .NET API)."""
    body = json.dumps(
        {
            "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
            "title": "One or more validation errors occurred.",
            "status": 400,
            "traceId": "00-abc-01",
            "errors": {"partyId": ["The partyId field is required."]},
        }
    )
    out = outcome(resp(400, body))
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert out.trace_id == "00-abc-01"
    assert [(fe.field, fe.message) for fe in out.field_errors] == [
        ("partyId", "The partyId field is required.")
    ]


def test_413_is_rejected_as_too_large() -> None:
    """413 CONTENT TOO LARGE (newer version of the page)."""
    out = outcome(resp(413, error_body(413, "Request entity too large.")))
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert out.rule == "econnect:413-too-large"
    assert out.message == "API413: Request entity too large."


def test_413_without_body_still_says_why() -> None:
    out = outcome(resp(413, "<html><body>413 Request Entity Too Large</body></html>"))
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert out.message == "Content too large"


def test_401_asks_for_a_fresh_token() -> None:
    """401 UNAUTHORIZED: authentication required and failed -> reauth (engine refreshes once)."""
    out = outcome(resp(401, b"", WWW_Authenticate='Bearer error="invalid_token"'))
    assert out.kind == OutcomeKind.REAUTH
    assert out.rule == "generic:401"  # OAuth2 declared: a token to refresh, not a key
    assert classify(resp(401, b"")) is None


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "PartyId 'NL:KVK:99999999' is not linked to this client."),
        (404, "PartyId 'NL:KVK:12345678' not found in Peppol."),
    ],
)
def test_403_and_404_are_configuration_errors(status: int, message: str) -> None:
    """403 FORBIDDEN (no permission) and 404 NOT FOUND: not the document's fault."""
    out = outcome(resp(status, error_body(status, message)))
    assert out is not None
    assert out.kind == OutcomeKind.CONFIG_ERROR
    assert out.message == f"API{status}: {message}"
    assert out.error_url == HELP
    assert out.status == status


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(status: int) -> None:
    """All 5xx are retryable (seed 000, "Retry strategy")."""
    out = outcome(resp(status, error_body(status, "An unexpected error occurred.")))
    assert out.kind == OutcomeKind.RETRY
    assert out.status == status
    assert out.wait is None


def test_503_honours_retry_after() -> None:
    out = outcome(resp(503, b"", Retry_After="7"))
    assert (out.kind, out.wait) == (OutcomeKind.RETRY, 7.0)


def test_429_is_throttled_with_the_wait_asked_for() -> None:
    out = outcome(resp(429, error_body(429, "Too many requests."), Retry_After="3"))
    assert (out.kind, out.wait) == (OutcomeKind.THROTTLED, 3.0)


def test_transport_error_before_sending_is_retry() -> None:
    out = outcome(None, TransportError(kind="connect", message="refused", sent=False))
    assert out.kind == OutcomeKind.RETRY
    assert out.rule == "generic:connect"


def test_transport_error_after_sending_is_unknown() -> None:
    """A dropped answer: the document may be processed; the resend gets 409."""
    out = outcome(None, TransportError(kind="read_timeout", message="timed out", sent=True))
    assert out.kind == OutcomeKind.UNKNOWN
    assert out.rule == "generic:read_timeout"


def test_nothing_to_classify_is_none() -> None:
    assert plugin.classify_response(None, None, None) is None  # type: ignore[arg-type]


def test_undocumented_4xx_is_left_to_the_generic_classifier() -> None:
    assert classify(resp(418, b"teapot")) is None
    assert outcome(resp(418, b"teapot")).kind == OutcomeKind.REJECTED


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><body>Bad Gateway</body></html>",
        b'{"message": "trunc',
        bytes(range(256)) * 4,
        b"",
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b'{"message": {"nested": true}, "code": 5}',
        b"x" * 70000,
        json.dumps({"errors": [{"message": "m", "field": "f"}, 3, None]}).encode(),
    ],
)
@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 413, 500, 503, 302, 999])
def test_never_raises_on_any_body(status: int, body: bytes) -> None:
    out = classify(resp(status, body), document_id=DOC_ID)
    if out is not None:
        assert out.message is None or len(out.message) <= 600
    assert outcome(resp(status, body)).rule != "generic:classifier-error"


def test_truncated_body_is_not_trusted() -> None:
    r = HttpResponse(status=400, body=error_body(400, "x")[:20], truncated=True)
    out = classify(r)
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert out.message == "Bad request"


def test_plain_text_error_is_kept_on_one_line() -> None:
    out = outcome(resp(400, "Invalid\r\nXML\x00 body"))
    assert out is not None
    assert out.message == "Invalid XML body"


def test_parse_error_body_reads_oauth_errors() -> None:
    body = parse_error_body(resp(400, '{"error": "invalid_client"}'))
    assert body.message == "invalid_client"


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_far_ahead_is_capped_at_a_day(status: int) -> None:
    """Seed 000: 5xx is retried with backoff; a Retry-After of a year is a provider or clock
    bug, not a reason to park the document for a year. (The old classifier set the wait
    itself, uncapped, so the core's cap never applied.)"""
    out = outcome(resp(status, b"", Retry_After=str(365 * 86400)))
    assert out.wait == 86400.0
