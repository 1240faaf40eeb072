"""The SieSmart classifier as a table: every status of seed 002, plus transport errors.

Bodies are the "Error" object the seed names (fields assumed: code, message, traceId). Each
answer goes through the core (``docrelay.testing.classify``): the plugin's classifier, then
docrelay's generic classification and completion, as the engine records it.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import docrelay_siesmart
import pytest
from docrelay import Document, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.testing import classify as classify_in_core
from docrelay_siesmart._classify import SEED_MESSAGES, proposal_id_from

TRACE = "3f6c2a4e-9a51-4c55-8f3e-2b7f0c1d9e11"


def classify(
    response: HttpResponse | None, error: TransportError | None = None, *, kind: str | None = None
) -> Outcome:
    """The outcome the engine records for an answer to a send of a document of *kind*."""
    document = None
    if kind is not None:
        document = Document(id="d-1", provider="siesmart", kind=kind, payload=b"{}")
    return classify_in_core(docrelay_siesmart, response, error, document=document)


def error_response(
    status: int, message: str, code: str = "ERR", trace_header: bool = True, **extra: Any
) -> HttpResponse:
    headers = {"Content-Type": "application/json"}
    if trace_header:
        headers["X-B2B-TRACE-ID"] = TRACE
    body = {"code": code, "message": message, "traceId": TRACE, **extra}
    return HttpResponse(status=status, headers=headers, body=json.dumps(body).encode())


# (status, the seed's "Description" column, expected outcome)
SEED_TABLE = [
    (401, "The auth token is invalid or not present", OutcomeKind.REAUTH),
    (403, "The requested operation is not authorized for your token", OutcomeKind.CONFIG_ERROR),
    (412, "For POST requests, the 'If-Match' header is missing", OutcomeKind.STALE),
    (429, "The request rate limit has been reached", OutcomeKind.THROTTLED),
    (500, "Internal server error", OutcomeKind.RETRY),
    (503, "Service unavailable", OutcomeKind.RETRY),
]


@pytest.mark.parametrize(("status", "description", "expected"), SEED_TABLE)
def test_seed_error_statuses(status: int, description: str, expected: OutcomeKind) -> None:
    """Each documented error status maps to its outcome and keeps the provider's words."""
    out = classify(error_response(status, description), kind="proposal_update")
    assert out.kind == expected
    assert out.status == status
    assert description in (out.message or "")
    assert out.trace_id == TRACE
    assert out.rule is not None
    assert out.rule.startswith("siesmart:")


@pytest.mark.parametrize(("status", "description", "expected"), SEED_TABLE)
def test_seed_statuses_without_body_use_the_seed_words(
    status: int, description: str, expected: OutcomeKind
) -> None:
    """An empty error body still gets the seed's description as message."""
    resp = HttpResponse(status=status, headers={"X-B2B-TRACE-ID": "t-1"})
    out = classify(resp, kind="decision")
    assert out.kind == expected
    assert out.message == description == SEED_MESSAGES[status]
    assert out.trace_id == "t-1"


def test_200_create_delivered_with_proposal_id() -> None:
    """200 on create: delivered, the proposal id from the body becomes provider_ref."""
    resp = HttpResponse(
        status=200,
        headers={"ETag": "2025-06-01T10:00:00.000001Z", "X-B2B-TRACE-ID": TRACE},
        body=json.dumps({"id": "4700001", "officeId": "OFF-DE-1001"}).encode(),
    )
    out = classify(resp, kind="proposal")
    assert out.kind == OutcomeKind.DELIVERED
    assert out.provider_ref == "4700001"
    assert out.trace_id == TRACE
    assert out.message == "The request has been successful"


def test_200_create_without_id_is_unknown() -> None:
    """A create that answers 200 without an id took effect but cannot be followed: unknown,
    so the engine reconciles by label and finds the id."""
    resp = HttpResponse(status=200, body=b"<html>ok</html>")
    out = classify(resp, kind="proposal")
    assert out.kind == OutcomeKind.UNKNOWN
    assert out.rule == "siesmart:200-create-without-id"


@pytest.mark.parametrize("kind", ["proposal_update", None])
def test_200_update_and_get(kind: str | None) -> None:
    """200 on PUT or GET: delivered."""
    resp = HttpResponse(status=200, body=b'{"id": "4700002"}')
    out = classify(resp, kind=kind)
    assert out.kind == OutcomeKind.DELIVERED
    assert out.provider_ref == "4700002"


def test_200_decision_keeps_decision_status() -> None:
    """200 on decision: delivered, provider_status = decision.decisionStatus."""
    body = {"id": "4700003", "decision": {"decisionStatus": "NOT_AVAILABLE"}}
    out = classify(HttpResponse(status=200, body=json.dumps(body).encode()), kind="decision")
    assert out.kind == OutcomeKind.DELIVERED
    assert out.provider_status == "NOT_AVAILABLE"


def test_412_on_create_is_config_error() -> None:
    """Creation needs no If-Match; a 412 there is not solved by a refresh."""
    out = classify(error_response(412, SEED_MESSAGES[412]), kind="proposal")
    assert out.kind == OutcomeKind.CONFIG_ERROR
    assert out.rule == "siesmart:412-on-create"


def test_412_stale_etag_message_kept() -> None:
    out = classify(
        error_response(412, "The 'If-Match' header does not match", code="PRECONDITION_FAILED"),
        kind="decision",
    )
    assert out.kind == OutcomeKind.STALE
    assert out.message == "PRECONDITION_FAILED: The 'If-Match' header does not match"


@pytest.mark.parametrize(("header", "wait"), [("7", 7.0), (None, None), ("soon", None)])
def test_429_wait_from_retry_after(header: str | None, wait: float | None) -> None:
    """429: throttled; the wait is Retry-After when present (none is promised)."""
    resp = error_response(429, SEED_MESSAGES[429])
    if header is not None:
        resp = HttpResponse(
            status=429, headers={**resp.headers, "Retry-After": header}, body=resp.body
        )
    out = classify(resp, kind="proposal")
    assert out.kind == OutcomeKind.THROTTLED
    assert out.wait == wait


def test_429_retry_after_http_date() -> None:
    """An HTTP-date Retry-After (the core reads it; the plugin no longer does)."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    resp = HttpResponse(status=429, headers={"Retry-After": when}, body=b"")
    out = classify(resp)
    assert out.kind == OutcomeKind.THROTTLED
    assert out.wait is not None
    assert 20.0 < out.wait <= 31.0


def test_trace_id_from_body_when_header_missing() -> None:
    """The Error object carries the request id too."""
    out = classify(error_response(500, "Internal server error", trace_header=False))
    assert out.trace_id == TRACE


def test_trace_header_is_case_insensitive() -> None:
    resp = HttpResponse(status=503, headers={"x-b2b-trace-id": "abc"})
    assert classify(resp).trace_id == "abc"


@pytest.mark.parametrize("status", [400, 422])
def test_validation_errors_rejected_with_field_errors(status: int) -> None:
    """400/422: rejected, each field error kept."""
    resp = error_response(
        status,
        "Proposal is invalid",
        code="VALIDATION_FAILED",
        errors=[
            {"field": "officeId", "code": "NotNull", "message": "must not be null"},
            {
                "field": "assets[0].iacCode",
                "code": "NotNull",
                "message": "must not be null",
                "rejectedValue": None,
            },
        ],
    )
    out = classify(resp, kind="proposal")
    assert out.kind == OutcomeKind.REJECTED
    assert out.message == "VALIDATION_FAILED: Proposal is invalid"
    assert [fe.field for fe in out.field_errors] == ["officeId", "assets[0].iacCode"]
    assert out.field_errors[0].rule == "NotNull"
    assert out.trace_id == TRACE


def test_decision_precondition_violations() -> None:
    """The documented pre-check shape {code, userMessage} becomes field errors."""
    resp = error_response(
        422,
        "The decision request is not allowed",
        preconditionViolations=[
            {"code": "CUSTOMER_MISSING", "userMessage": "The proposal has no customer yet"}
        ],
    )
    out = classify(resp, kind="decision")
    assert out.kind == OutcomeKind.REJECTED
    assert out.field_errors[0].message == "The proposal has no customer yet"
    assert out.field_errors[0].field == "preconditionViolations"
    assert out.field_errors[0].rule == "CUSTOMER_MISSING"


def test_404_with_error_object_is_rejected() -> None:
    """The named proposal does not exist (test DB refreshed): the document is wrong."""
    out = classify(error_response(404, "Proposal 1 not found"), kind="proposal_update")
    assert out.kind == OutcomeKind.REJECTED


def test_404_html_is_config_error() -> None:
    """A 404 without the provider's Error object: wrong base URL."""
    resp = HttpResponse(status=404, headers={"Content-Type": "text/html"}, body=b"<html>")
    assert classify(resp).kind == OutcomeKind.CONFIG_ERROR


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (502, OutcomeKind.RETRY),
        (504, OutcomeKind.RETRY),
        (405, OutcomeKind.CONFIG_ERROR),
        (301, OutcomeKind.CONFIG_ERROR),
        (409, OutcomeKind.REJECTED),
        (413, OutcomeKind.REJECTED),
        (204, OutcomeKind.DELIVERED),
    ],
)
def test_other_statuses(status: int, expected: OutcomeKind) -> None:
    assert classify(HttpResponse(status=status), kind="proposal_update").kind == expected


@pytest.mark.parametrize(
    ("sent", "expected"), [(False, OutcomeKind.RETRY), (True, OutcomeKind.UNKNOWN)]
)
@pytest.mark.parametrize("kind", ["connect", "read_timeout", "disconnected"])
def test_transport_errors(kind: str, sent: bool, expected: OutcomeKind) -> None:
    """Not sent: retry; maybe sent: unknown (the engine reconciles before resending). The
    generic classification answers these (the rule names the transport error)."""
    out = classify(None, TransportError(kind=kind, message="boom", sent=sent), kind="proposal")
    assert out.kind == expected
    assert out.rule == f"generic:{kind}"
    assert out.message == "boom"


def test_neither_response_nor_error() -> None:
    """Never sent by the engine; the generic answer: unknown (nothing is known)."""
    assert classify(None, None).kind == OutcomeKind.UNKNOWN


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>Bad gateway</body></html>",
        b'{"code": "X", "message": ',
        b"\xff\xfe\x00binary\x00",
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b'{"message": {"nested": true}, "errors": "not a list", "traceId": 5}',
        b'{"errors": [1, null, {"field": 3}]}',
        b"[" * 5000 + b"]" * 5000,
        json.dumps({"message": "x" * 200_000}).encode(),
    ],
)
@pytest.mark.parametrize("status", [200, 400, 401, 404, 412, 422, 429, 500, 599, 999, 100])
def test_never_raises(status: int, body: bytes) -> None:
    """Any body, any status: an outcome, never an exception; messages stay short."""
    for kind in ("proposal", "proposal_update", "decision", None):
        out = classify(HttpResponse(status=status, body=body), kind=kind)
        assert out.kind in set(OutcomeKind)
        assert len(out.message or "") <= 1000


def test_truncated_body_is_not_parsed() -> None:
    resp = HttpResponse(status=200, body=b'{"id": "4700009"}', truncated=True)
    out = classify(resp, kind="proposal")
    assert out.kind == OutcomeKind.UNKNOWN


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": "1"}, "1"),
        ({"id": 42}, "42"),
        ({"proposalId": "P-9"}, "P-9"),
        ({"proposal": {"id": "7"}}, "7"),
        ({"id": True}, None),
        ({"id": ""}, None),
        ([], None),
    ],
)
def test_proposal_id_from(body: Any, expected: str | None) -> None:
    assert proposal_id_from(body) == expected
