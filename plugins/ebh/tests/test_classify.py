"""The eBillingHub classifier, built from the documented bodies of seed 003 (and providers.md 4).

Pure unit tests: HttpResponse / TransportError values constructed directly, no HTTP. A send's
answer is checked as the engine records it (``docrelay.testing.classify``: the plugin's
classifier, then docrelay's generic classification and completion); the poll's table is the
plugin's alone.
"""

from __future__ import annotations

import json
from typing import Any

import docrelay_ebh
import pytest
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.testing import classify as classify_in_core
from docrelay_ebh._classify import (
    classify_poll,
    classify_send,
    id_from_location,
    is_valid_id,
    poll_transport,
    same_host,
    validated_invoice_url,
)

BASE = "https://ebh.example.test"
NEW = f"{BASE}/ebh/validations/v2/ValidationRequest"

# -- bodies copied from seed 003 --------------------------------------------------------------

SEED_IN_PROGRESS = {
    "Id": "56ec4bb5-d0f1-4bd5-8bc1-4d28d6269459",
    "Status": 1,
    "InvoiceType": 3,
    "ValidationMessage": None,
    "PostTime": "2019-06-04T11:17:09.97Z",
    "StartTime": None,
    "EndTime": None,
    "ValidationResults": [],
}

SEED_COMPLETE = {
    "Id": "03a43f3c-a809-4132-9ad3-73087486cd09",
    "Status": 4,
    "InvoiceType": 3,
    "PostTime": "2016-07-07T23:32:55Z",
    "StartTime": "2016-07-07T23:32:57Z",
    "EndTime": "2016-07-07T23:32:58Z",
    "ValidationMessage": "Validation Complete",
    "ValidatedInvoiceUrl": "https:///{eBHdomain}/api/v1/ValidationRequest/"
    "03a43f3c-a809-4132-9ad3-73087486cd09",
    "ValidationResults": [
        {
            "Severity": "UBF_MESSAGE",
            "Identifier": "UBFDocument/consumers/item[@consumerId='1710']/invoices/"
            "item[@invoiceId='12744407']/currency",
            "Message": "The currency must follow ISO Codes",
            "RulePath": "UbfValidation_Ledes_standard.Invoice.invoice_UBF.Validate_currency."
            "Validate_currency",
        }
    ],
}

SEED_ERROR = {"Message": "An unexpected error occurred. Please, contact the support team."}


def resp(
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    url: str = NEW,
    raw: bytes | None = None,
) -> HttpResponse:
    h = {"Content-Type": "application/json", "OperationId": "op-123"}
    h.update(headers or {})
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return HttpResponse(status=status, headers=h, body=data, url=url)


def poll(response: HttpResponse, **kw: Any) -> Outcome:
    return classify_poll(response, **kw)


def send(
    response: HttpResponse | None, error: TransportError | None = None, **settings: Any
) -> Outcome:
    """The outcome the engine records for an answer to the POST."""
    return classify_in_core(docrelay_ebh, response, error, settings=settings)


# -- POST ValidationRequest -------------------------------------------------------------------


def test_post_201_body_id_is_accepted_with_provider_ref() -> None:
    """201 Created with the body's Id -> accepted; Id is the provider reference."""
    o = send(resp(201, SEED_IN_PROGRESS, {"Location": f"{NEW}/{SEED_IN_PROGRESS['Id']}"}))
    assert o.kind == OutcomeKind.ACCEPTED
    assert SEED_IN_PROGRESS["Id"] == o.provider_ref
    assert o.request_id == "op-123"
    assert o.provider_status == "1"
    assert o.status == 201
    assert o.rule == "ebh:201-created"


def test_post_201_without_body_takes_id_from_location_on_same_host() -> None:
    """No body: the id comes from the Location header when it is on the configured host."""
    rid = "0f0e1d2c-3b4a-5968-7766-554433221100"
    o = classify_send(resp(201, None, {"Location": f"{NEW}/{rid}"}), BASE)
    assert o is not None
    assert o.kind == OutcomeKind.ACCEPTED
    assert rid == o.provider_ref


def test_post_201_location_on_other_host_is_ignored() -> None:
    """A Location elsewhere is never trusted: no id -> unknown (reconcile decides)."""
    rid = "0f0e1d2c-3b4a-5968-7766-554433221100"
    o = classify_send(
        resp(201, None, {"Location": f"https://evil.example/ebh/ValidationRequest/{rid}"}), BASE
    )
    assert o is not None
    assert o.kind == OutcomeKind.UNKNOWN
    assert o.provider_ref is None
    assert o.rule == "ebh:2xx-no-id"


def test_post_201_with_unsafe_body_id_is_not_used() -> None:
    """An Id that could change the URL path (../) is never used for polling."""
    o = send(resp(201, {"Id": "../../admin", "Status": 1}))
    assert o.kind == OutcomeKind.UNKNOWN


def test_post_201_poll_wait_hint_passed_through() -> None:
    """The configured poll interval becomes the accepted outcome's wait hint."""
    o = send(resp(201, SEED_IN_PROGRESS), poll_interval=2.5)
    assert o.wait == 2.5


@pytest.mark.parametrize(
    ("status", "kind", "rule"),
    [
        (400, OutcomeKind.REJECTED, "ebh:400-bad-request"),
        (401, OutcomeKind.CONFIG_ERROR, "ebh:401-provider-key"),
        (403, OutcomeKind.CONFIG_ERROR, "generic:403"),
        (404, OutcomeKind.CONFIG_ERROR, "generic:404"),
        (406, OutcomeKind.CONFIG_ERROR, "ebh:406-accept"),
        (413, OutcomeKind.REJECTED, "ebh:413-too-large"),
        (415, OutcomeKind.CONFIG_ERROR, "ebh:415-content-type"),
        (500, OutcomeKind.RETRY, "ebh:500"),
        (502, OutcomeKind.RETRY, "generic:5xx"),
        (503, OutcomeKind.RETRY, "generic:5xx"),
    ],
)
def test_post_documented_status_codes(status: int, kind: OutcomeKind, rule: str) -> None:
    """Every status of the documented table maps to its outcome and keeps the Message; the
    statuses outside the seed's table (403, 404, 502, 503) are docrelay's generic rows."""
    body = {"Message": f"provider says {status}"}
    o = send(resp(status, body))
    assert kind == o.kind
    assert rule == o.rule
    assert f"provider says {status}" == o.message
    assert o.request_id == "op-123"
    assert status == o.status


def test_post_400_keeps_provider_message() -> None:
    """400: rejected with the provider's own Message."""
    msg = "Invalid InvoiceType 'UBF'."
    o = send(resp(400, {"Message": msg}))
    assert o.kind == OutcomeKind.REJECTED
    assert msg == o.message


def test_post_500_seed_error_body() -> None:
    """The seed's error body: retry, its Message kept."""
    o = send(resp(500, SEED_ERROR))
    assert o.kind == OutcomeKind.RETRY
    assert SEED_ERROR["Message"] == o.message


def test_post_503_honours_retry_after() -> None:
    o = send(resp(503, SEED_ERROR, {"Retry-After": "7"}))
    assert o.kind == OutcomeKind.RETRY
    assert o.wait == 7.0


def test_429_throttled_with_retry_after() -> None:
    o = send(resp(429, {"Message": "slow down"}, {"Retry-After": "3"}))
    assert o.kind == OutcomeKind.THROTTLED
    assert o.wait == 3.0


def test_401_without_body_uses_documented_text() -> None:
    """An empty 401 still says what the docs say."""
    o = send(resp(401, None))
    assert o.kind == OutcomeKind.CONFIG_ERROR
    assert o.message == "The Provider Key is not authorized."


# -- GET ValidationRequest/{id} ---------------------------------------------------------------


def test_poll_202_seed_in_progress_is_accepted() -> None:
    """202 with the seed's in-progress body: still accepted, Status 1 kept."""
    o = poll(resp(202, SEED_IN_PROGRESS, url=f"{NEW}/{SEED_IN_PROGRESS['Id']}"))
    assert o.kind == OutcomeKind.ACCEPTED
    assert SEED_IN_PROGRESS["Id"] == o.provider_ref
    assert o.provider_status == "1"
    assert o.rule == "ebh:202-in-progress"


def test_poll_202_retry_after_wins_over_poll_wait() -> None:
    o = poll(resp(202, SEED_IN_PROGRESS, {"Retry-After": "4"}), poll_wait=1.0)
    assert o.wait == 4.0
    o = poll(resp(202, SEED_IN_PROGRESS), poll_wait=1.0)
    assert o.wait == 1.0


def test_poll_200_seed_complete_with_ubf_message_is_rejected() -> None:
    """200 with the seed's UBF_MESSAGE result: rejected with every result as a field error."""
    o = poll(resp(200, SEED_COMPLETE))
    assert o.kind == OutcomeKind.REJECTED
    assert o.message == "Validation Complete"
    assert SEED_COMPLETE["Id"] == o.provider_ref
    assert o.provider_status == "4"
    expected = (
        FieldError(
            field="UBFDocument/consumers/item[@consumerId='1710']/invoices/"
            "item[@invoiceId='12744407']/currency",
            message="The currency must follow ISO Codes",
            severity="UBF_MESSAGE",
            rule="UbfValidation_Ledes_standard.Invoice.invoice_UBF.Validate_currency."
            "Validate_currency",
        ),
    )
    assert expected == o.field_errors
    assert o.error_url is None
    assert o.rule == "ebh:validation-errors"


def test_poll_200_complete_without_results_is_delivered() -> None:
    body = dict(SEED_COMPLETE, ValidationResults=[])
    o = poll(resp(200, body))
    assert o.kind == OutcomeKind.DELIVERED
    assert SEED_COMPLETE["Id"] == o.provider_ref
    assert o.field_errors == ()
    assert o.rule == "ebh:validation-complete"


def test_poll_200_non_error_results_are_delivered_but_kept() -> None:
    """A result of a severity outside error_severities does not fail the document."""
    result = dict(SEED_COMPLETE["ValidationResults"][0], Severity="WARNING")  # type: ignore[index]
    body = dict(SEED_COMPLETE, ValidationResults=[result])
    o = poll(resp(200, body))
    assert o.kind == OutcomeKind.DELIVERED
    assert tuple(fe.severity for fe in o.field_errors) == ("WARNING",)


def test_poll_error_severities_setting_changes_the_verdict() -> None:
    """With UBF_MESSAGE not an error severity, the seed's completed body is delivered."""
    o = poll(resp(200, SEED_COMPLETE), error_severities=["ERROR"])
    assert o.kind == OutcomeKind.DELIVERED
    o = poll(resp(200, SEED_COMPLETE), error_severities=["ubf_message"])
    assert o.kind == OutcomeKind.REJECTED


def test_poll_all_results_kept_when_one_is_an_error() -> None:
    results = [
        {"Severity": "WARNING", "Identifier": "a", "Message": "m1", "RulePath": "r1"},
        {"Severity": "ERROR", "Identifier": "b", "Message": "m2", "RulePath": "r2"},
    ]
    o = poll(resp(200, dict(SEED_COMPLETE, ValidationResults=results)))
    assert o.kind == OutcomeKind.REJECTED
    assert [fe.field for fe in o.field_errors] == ["a", "b"]


def test_poll_status_3_is_retry_with_resend() -> None:
    """Status 3 (assumption: failed at the provider) -> send the document again."""
    body = dict(SEED_COMPLETE, Status=3, ValidationResults=[], ValidationMessage=None)
    o = poll(resp(200, body))
    assert o.kind == OutcomeKind.RETRY
    assert o.resend is True
    assert o.rule == "ebh:status-3-failed"


def test_poll_failed_statuses_setting() -> None:
    body = dict(SEED_COMPLETE, Status=5, ValidationResults=[])
    assert poll(resp(200, body)).kind == OutcomeKind.DELIVERED
    assert poll(resp(200, body), failed_statuses=[3, 5]).kind == OutcomeKind.RETRY


def test_poll_200_with_pending_status_is_still_accepted() -> None:
    o = poll(resp(200, SEED_IN_PROGRESS))
    assert o.kind == OutcomeKind.ACCEPTED


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, OutcomeKind.CONFIG_ERROR),
        (401, OutcomeKind.CONFIG_ERROR),
        (406, OutcomeKind.CONFIG_ERROR),
        (403, OutcomeKind.CONFIG_ERROR),
        (405, OutcomeKind.CONFIG_ERROR),
        (409, OutcomeKind.CONFIG_ERROR),
        (410, OutcomeKind.CONFIG_ERROR),
        (413, OutcomeKind.CONFIG_ERROR),
        (415, OutcomeKind.CONFIG_ERROR),
        (422, OutcomeKind.CONFIG_ERROR),
        (500, OutcomeKind.ACCEPTED),
        (502, OutcomeKind.ACCEPTED),
        (503, OutcomeKind.ACCEPTED),
        (408, OutcomeKind.ACCEPTED),
        (429, OutcomeKind.ACCEPTED),
    ],
)
def test_poll_documented_errors(status: int, kind: OutcomeKind) -> None:
    """Seed 003, GET ValidationRequest/{id}: 400 (our request: headers, parameters), 401
    (ProviderKey) and 406 (Accept) are config errors, never a rejection of the invoice; so is
    any other 4xx but 404 (the GET has no body to blame). 5xx/408/429: poll again."""
    o = poll(resp(status, {"Message": "m"}))
    assert kind == o.kind
    assert (o.message or "").startswith("m")
    assert o.request_id == "op-123"
    assert o.field_errors == ()
    if kind == OutcomeKind.CONFIG_ERROR:
        assert o.rule == f"ebh:poll-{status}-config"


@pytest.mark.parametrize("status", [400, 401, 406])
def test_poll_error_without_a_body_says_what_the_seed_says(status: int) -> None:
    o = poll(resp(status, raw=b""))
    assert o.kind == OutcomeKind.CONFIG_ERROR
    assert (
        o.message
        in {
            400: "The poll request was incorrectly formatted, missing a required header or "
            "parameters were invalid.",
            401: "The Provider Key is not authorized.",
            406: "Provided Accept HTTP Header is not supported.",
        }.values()
    )


def test_send_400_is_still_a_rejection() -> None:
    """On the POST, a 400 is about what was sent (the invoice): rejected, as before."""
    assert send(resp(400, {"Message": "bad xml"})).kind == OutcomeKind.REJECTED


def test_poll_500_seed_error_polls_again() -> None:
    """A failed read does not lose the validation request: still accepted, poll again."""
    o = poll(resp(500, SEED_ERROR))
    assert o.kind == OutcomeKind.ACCEPTED
    assert SEED_ERROR["Message"] in (o.message or "")
    assert o.status == 500


def test_poll_404_unknown_request_resends() -> None:
    o = poll(resp(404, {"Message": "not found"}))
    assert o.kind == OutcomeKind.RETRY
    assert o.resend is True


def test_poll_200_unreadable_polls_again() -> None:
    o = poll(resp(200, raw=b"<html>gateway</html>", headers={"Content-Type": "text/html"}))
    assert o.kind == OutcomeKind.ACCEPTED
    assert o.rule == "ebh:200-unreadable"


# -- transport errors -------------------------------------------------------------------------


def test_transport_not_sent_is_retry() -> None:
    o = send(None, TransportError(kind="connect", message="refused", sent=False))
    assert o.kind == OutcomeKind.RETRY


def test_transport_sent_is_unknown() -> None:
    o = send(None, TransportError(kind="read_timeout", message="timed out", sent=True))
    assert o.kind == OutcomeKind.UNKNOWN


def test_transport_tls_is_config_error() -> None:
    o = send(None, TransportError(kind="tls", message="certificate verify failed", sent=False))
    assert o.kind == OutcomeKind.CONFIG_ERROR


@pytest.mark.parametrize("phase", ["send", "poll"])
def test_redirect_is_config_error(phase: str) -> None:
    """A 3xx means the base_url is wrong (http vs https, old host): not followed."""
    answer = resp(301, None, {"Location": "https://elsewhere/x"})
    o = send(answer) if phase == "send" else poll(answer)
    assert o.kind == OutcomeKind.CONFIG_ERROR
    assert "base URL" in (o.message or "")


def test_transport_while_polling_polls_again() -> None:
    err = TransportError(kind="read_timeout", message="timed out", sent=True)
    o = poll_transport(err)
    assert o.kind == OutcomeKind.ACCEPTED


# -- robustness -------------------------------------------------------------------------------

WEIRD_BODIES = [
    b"",
    b"<html><body>502 Bad Gateway</body></html>",
    b'{"Id": "56ec4bb5-d0f1-4bd5-8bc1',
    bytes(range(256)) * 10,
    b"[]",
    b"null",
    b'"just a string"',
    b'{"Status": "four", "ValidationResults": "nope"}',
    b'{"Status": true}',
    b'{"Status": 4, "ValidationResults": [1, null, "x", {"Severity": 5}]}',
    b"{" * 5000,
    json.dumps({"Message": "x" * 100_000}).encode(),
]


@pytest.mark.parametrize("phase", ["send", "poll"])
@pytest.mark.parametrize("status", [200, 201, 202, 204, 302, 400, 401, 404, 413, 499, 500, 599])
@pytest.mark.parametrize("body", WEIRD_BODIES)
def test_never_raises(phase: str, status: int, body: bytes) -> None:
    """Any body, any status: an Outcome, never an exception."""
    r = HttpResponse(status=status, headers={"Content-Type": "application/json"}, body=body)
    o = classify_send(r, BASE) if phase == "send" else classify_poll(r)
    if phase == "send" and o is None:  # left to the generic classification
        o = send(r)
    assert o is not None
    assert o.kind in set(OutcomeKind)
    assert len(o.message or "") <= 600


def test_truncated_body_is_not_parsed() -> None:
    r = HttpResponse(status=201, body=json.dumps(SEED_IN_PROGRESS).encode(), truncated=True)
    o = classify_send(r, BASE)
    assert o is not None
    assert o.kind == OutcomeKind.UNKNOWN


def test_weird_results_items_kept_as_far_as_possible() -> None:
    body = {"Status": 4, "ValidationResults": [1, {"Severity": "ERROR"}]}
    o = poll(resp(200, body))
    assert o.kind == OutcomeKind.REJECTED
    assert (FieldError(field=None, message="(no message)", severity="ERROR"),) == o.field_errors


# -- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{BASE}/x", True),
        ("https://EBH.example.test:443/x", True),
        ("/relative/path", True),
        ("http://ebh.example.test/x", False),
        ("https://ebh.example.test:8443/x", False),
        ("https://evil.example/x", False),
        ("//evil.example/x", False),
        ("https:///{eBHdomain}/api/v1/ValidationRequest/1", False),
        ("https://[::1/x", False),
    ],
)
def test_same_host(url: str, expected: bool) -> None:
    assert expected == same_host(url, BASE)


def test_validated_invoice_url_only_on_configured_host() -> None:
    """The seed's placeholder URL (no host) is dropped; one on our host is kept."""
    assert validated_invoice_url(SEED_COMPLETE, BASE) is None
    mine = f"{NEW}/{SEED_COMPLETE['Id']}"
    assert mine == validated_invoice_url(dict(SEED_COMPLETE, ValidatedInvoiceUrl=mine), BASE)
    other = dict(SEED_COMPLETE, ValidatedInvoiceUrl="https://other.example/x")
    assert validated_invoice_url(other, BASE) is None


def test_id_from_location() -> None:
    rid = SEED_COMPLETE["Id"]
    assert rid == id_from_location(f"{NEW}/{rid}", BASE)
    assert rid == id_from_location(f"/validations/api/v1/ValidationRequest/{rid}", BASE)
    assert id_from_location(f"{NEW}/{rid}/extra", BASE) is None
    assert id_from_location(None, BASE) is None
    assert not is_valid_id("a/b")
    assert not is_valid_id(42)
