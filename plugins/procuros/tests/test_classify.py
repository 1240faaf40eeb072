"""The classifier against every status and body the Procuros documents show (seed 001, the
error handling page, the OpenAPI examples), plus transport errors and hostile bodies.

Each answer goes through the core as in a delivery round (``docrelay.testing.classify``): the
plugin's ``classify_response``, then docrelay's generic classification and completion (the
status, the ``Retry-After`` wait, the request id). The lookup after "Payload already received"
needs HTTP, so it is off here (``lookup = false``); tests/test_hooks.py covers it."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

import docrelay_procuros
import pytest
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.testing import classify as classify_in_core
from docrelay_procuros import erp_status
from docrelay_procuros._classify import classify as table

PORTAL = "https://portal.procuros.io/errors/5b0e1c9e-0f7a-4b7e-9d61-3a0f5e8c2b11"


def classify(
    response: HttpResponse | None, error: TransportError | None, **settings: Any
) -> Outcome:
    """The outcome the engine records for an answer to a send."""
    settings = {"lookup": False, **settings}
    return classify_in_core(docrelay_procuros, response, error, settings=settings)


def resp(status: int, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    return HttpResponse(status=status, headers=h, body=raw)


# -- seed 001: "Tracking document status" ------------------------------------------------------


def test_201_is_delivered_and_transmitted() -> None:
    body = {"procurosTransactionId": "949b2f25-fd9d-4c58-8899-b4dc277f8cf9"}
    out = classify(resp(201, body), None)
    assert out.kind is OutcomeKind.DELIVERED
    assert out.provider_ref == "949b2f25-fd9d-4c58-8899-b4dc277f8cf9"
    assert out.provider_status == "TRANSMITTED"
    assert out.status == 201
    assert out.rule == "procuros:201-transmitted"
    assert erp_status(out) == ("TRANSMITTED", None)


def test_202_is_no_action_with_the_message() -> None:
    out = classify(resp(202, {"message": "Trade relationship not yet active."}), None)
    assert out.kind is OutcomeKind.NO_ACTION
    assert out.provider_status == "NO_ACTION"
    assert out.message == "Trade relationship not yet active."
    assert out.is_success
    assert erp_status(out) == ("NO_ACTION", None)


def test_422_invalid_type_is_rejected_with_field_errors_and_portal_url() -> None:
    body = {
        "message": "The given data was invalid.",
        "errors": {"type": ['Transaction type "PAYMENT_ADVICE" is not valid']},
        "errorUrl": PORTAL,
    }
    out = classify(resp(422, body), None)
    assert out.kind is OutcomeKind.REJECTED
    assert out.message == "The given data was invalid."
    assert out.field_errors == (
        FieldError(field="type", message='Transaction type "PAYMENT_ADVICE" is not valid'),
    )
    assert out.error_url == PORTAL
    assert out.provider_status is None
    assert erp_status(out) == (None, PORTAL)


def test_422_unknown_party_keeps_every_message() -> None:
    body = {
        "message": "The given data was invalid.",
        "errors": {
            "buyer": ["Could not resolve party using provided identifiers"],
            "content.header.orderIdentifier": [
                "The content.header.orderIdentifier field is required.",
                "second message",
            ],
        },
        "errorUrl": PORTAL,
    }
    out = classify(resp(422, body), None)
    assert out.kind is OutcomeKind.REJECTED
    assert [(fe.field, fe.message) for fe in out.field_errors] == [
        ("buyer", "Could not resolve party using provided identifiers"),
        ("content.header.orderIdentifier", "The content.header.orderIdentifier field is required."),
        ("content.header.orderIdentifier", "second message"),
    ]


def test_400_client_error_is_rejected_with_url_and_empty_erp_status() -> None:
    body = {"message": "The transaction could not be processed.", "errorUrl": PORTAL}
    out = classify(resp(400, body), None)
    assert out.kind is OutcomeKind.REJECTED
    assert out.error_url == PORTAL
    assert out.provider_status is None
    assert out.rule == "procuros:400-bad-request"


@pytest.mark.parametrize(
    "message", ["Payload already received", "Payload already received.", "payload ALREADY received"]
)
def test_400_payload_already_received_is_a_duplicate(message: str) -> None:
    out = classify(resp(400, {"message": message, "errorUrl": PORTAL}), None)
    assert out.kind is OutcomeKind.DUPLICATE
    assert out.is_success
    # The 400 alone does not say whether the payload was forwarded (201) or not (202): the
    # pure classifier claims no ERP status; the hook confirms it with a lookup.
    assert out.provider_status is None
    assert out.error_url == PORTAL
    assert erp_status(out) == (None, None)
    rule = table(resp(400, {"message": message, "errorUrl": PORTAL}))
    assert rule is not None
    assert rule.rule == "procuros:400-payload-already-received"


def test_duplicate_message_is_a_setting() -> None:
    body = {"message": "Transaction already exists", "errorUrl": PORTAL}
    assert classify(resp(400, body), None).kind is OutcomeKind.REJECTED
    out = classify(resp(400, body), None, duplicate_message="Transaction already exists")
    assert out.kind is OutcomeKind.DUPLICATE
    # ... and the documented message is then an ordinary rejection
    other = {"message": "Payload already received", "errorUrl": PORTAL}
    assert (
        classify(resp(400, other), None, duplicate_message="Transaction already exists").kind
        is OutcomeKind.REJECTED
    )


def test_duplicate_status_is_a_setting() -> None:
    body = {"message": "Payload already received", "errorUrl": PORTAL}
    assert classify(resp(400, body), None).provider_status is None
    out = classify(resp(400, body), None, duplicate_status="NO_ACTION")
    assert out.provider_status == "NO_ACTION"


def test_422_is_never_a_duplicate_even_with_the_message() -> None:
    body = {"message": "Payload already received", "errors": {}, "errorUrl": PORTAL}
    assert classify(resp(422, body), None).kind is OutcomeKind.REJECTED


# -- error handling page: 401, 403, 404, 429, 5xx ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "rule"),
    [
        # A static bearer token: nothing to refresh, so a 401 is not reauth (the core's rule).
        (401, "generic:401-key"),
        (403, "generic:403"),
        (404, "generic:404"),
    ],
)
def test_auth_and_endpoint_errors_are_config_errors(status: int, rule: str) -> None:
    out = classify(resp(status, {"message": "Unauthenticated.", "errorUrl": PORTAL}), None)
    assert out.kind is OutcomeKind.CONFIG_ERROR
    assert out.rule == rule
    assert out.message == "Unauthenticated."
    assert out.provider_status is None
    # Every Procuros 4xx carries its portal link (ClientErrorResponse): it is kept.
    assert out.error_url == PORTAL
    assert erp_status(out) == (None, PORTAL)


def test_401_is_not_reauth_for_a_static_token() -> None:
    assert classify(resp(401, {"message": "Unauthenticated."}), None).kind is not (
        OutcomeKind.REAUTH
    )


def test_429_without_retry_after_waits_none() -> None:
    out = classify(resp(429, {"message": "Too Many Attempts.", "errorUrl": PORTAL}), None)
    assert out.kind is OutcomeKind.THROTTLED
    assert out.wait is None


def test_429_with_retry_after_keeps_it() -> None:
    out = classify(resp(429, {"message": "Too Many Attempts."}, {"Retry-After": "7"}), None)
    assert out.kind is OutcomeKind.THROTTLED
    assert out.wait == 7.0


def test_429_with_http_date_retry_after() -> None:
    # An HTTP date a minute ahead (the core reads it against the clock: a wide tolerance).
    when = formatdate(time.time() + 60, usegmt=True)
    out = classify(resp(429, {"message": "x"}, {"Retry-After": when}), None)
    assert out.kind is OutcomeKind.THROTTLED
    assert out.wait == pytest.approx(60.0, abs=10.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retry_with_the_message(status: int) -> None:
    out = classify(resp(status, {"message": "Server Error"}), None)
    assert out.kind is OutcomeKind.RETRY
    assert out.message == "Server Error"
    assert out.rule == "generic:5xx"


def test_503_html_from_a_proxy_keeps_a_short_excerpt() -> None:
    html = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    out = classify(HttpResponse(status=503, headers={"Content-Type": "text/html"}, body=html), None)
    assert out.kind is OutcomeKind.RETRY
    assert out.message is not None
    assert "503 Service Temporarily Unavailable" in out.message


# -- other statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, OutcomeKind.DELIVERED),
        (204, OutcomeKind.DELIVERED),
        (301, OutcomeKind.CONFIG_ERROR),
        (405, OutcomeKind.CONFIG_ERROR),
        (406, OutcomeKind.CONFIG_ERROR),
        (408, OutcomeKind.RETRY),
        (409, OutcomeKind.REJECTED),
        (413, OutcomeKind.REJECTED),
        (415, OutcomeKind.CONFIG_ERROR),
    ],
)
def test_other_statuses(status: int, kind: OutcomeKind) -> None:
    assert classify(resp(status, {"message": "m", "errorUrl": PORTAL}), None).kind is kind


def test_201_without_body_is_still_delivered() -> None:
    out = classify(resp(201, None), None)
    assert out.kind is OutcomeKind.DELIVERED
    assert out.provider_ref is None


def test_request_id_header_is_kept() -> None:
    out = classify(resp(422, {"message": "m"}, {"X-Request-Id": "req-42"}), None)
    assert out.request_id == "req-42"


# -- transport errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["connect", "connect_timeout"])
def test_transport_error_before_send_is_retry(kind: str) -> None:
    out = classify(None, TransportError(kind=kind, message="refused", sent=False))
    assert out.kind is OutcomeKind.RETRY


@pytest.mark.parametrize("kind", ["read_timeout", "disconnected"])
def test_transport_error_after_send_is_unknown(kind: str) -> None:
    out = classify(None, TransportError(kind=kind, message="timed out", sent=True))
    assert out.kind is OutcomeKind.UNKNOWN


def test_neither_response_nor_error_is_unknown() -> None:
    assert classify(None, None).kind is OutcomeKind.UNKNOWN


# -- hostile bodies: never raise ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"message": ',
        b"\x00\xff\xfe binary \x89PNG",
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b'{"message": 42, "errors": "not a map", "errorUrl": ["x"]}',
        b'{"errors": {"a": [null, 1, {"x": 1}], "b": "single"}}',
        b'{"procurosTransactionId": {"nested": true}}',
        b"[" * 100_000,
        b'{"message": "' + b"x" * 200_000 + b'"}',
    ],
)
@pytest.mark.parametrize("status", [201, 202, 400, 401, 422, 429, 500, 599, 999, 0, -1])
def test_never_raises(status: int, body: bytes) -> None:
    out = classify(HttpResponse(status=status, body=body), None)
    assert out.kind in set(OutcomeKind)
    # The plugin's own classifier did not raise (the core would have stepped in).
    assert out.rule != "generic:classifier-error"
    if out.message is not None:
        assert len(out.message) <= 1000


def test_truncated_response_is_not_parsed() -> None:
    r = HttpResponse(status=422, body=b'{"message": "The given data', truncated=True)
    out = classify(r, None)
    assert out.kind is OutcomeKind.REJECTED


def test_odd_field_errors_are_kept_as_text() -> None:
    body = {"message": "m", "errors": {"a": [None, 1], "b": "single"}}
    out = classify(resp(422, body), None)
    assert [(fe.field, fe.message) for fe in out.field_errors] == [("a", "1"), ("b", "single")]


def test_erp_status_for_pending_outcomes_is_empty() -> None:
    assert erp_status(classify(resp(503, {"message": "x"}), None)) == (None, None)
    assert erp_status(None) == (None, None)
