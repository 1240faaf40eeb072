"""The AQI classifier and EDIErrorSent parser, built from the bodies seed 004 documents."""

from __future__ import annotations

import json
from typing import Any

import docrelay_aqi
import pytest
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.testing import classify as classify_in_core
from docrelay_aqi._classify import classify as aqi_table
from docrelay_aqi._classify import parse_description
from docrelay_aqi._notify import DataSourceMismatch, parse_notification_body

JSON = {"Content-Type": "application/json"}

# Seed 004, "Example for 400 error", verbatim.
SEED_400 = {
    "type": "RequestBody",
    "title": "IncorrectMessage",
    "code": 400,
    "description": "Body of the request does not conform to the definition which is associated "
    "with the content type application/json. Path:billToAddress.email Message: String 'null' "
    "does not validate against format 'email'. Line: 1, Position: 134 SchemaId: "
    "#/components/schemas/BillToAddress/allOf/1/properties/email",
}

# Seed 004, "Error Notification Example" (the seed's copy lacks the closing braces and the
# type; R-EDI gives the full shape).
SEED_ERROR_NOTIFICATION = {
    "parameters": {
        "requestType": "GET_ORDER",
        "transactionId": "0a6b660174a3306898a924639688dffb",
        "details": {
            "orderNo": "ORDPL8100235158",
            "result": "ERROR_IN_FILE",
            "errorDetails": [
                {
                    "fieldName": "LINEITEMSTATUS",
                    "ErrorDescription": "Field LINEITEMSTATUS must not be empty.",
                },
                {
                    "fieldName": "BILLTOLANGUAGECODE",
                    "providedValue": "PL",
                    "ErrorDescription": "The content of field BILLTOLANGUAGECODE may only "
                    "consist of lower case letters.",
                },
            ],
        },
    },
    "type": "accounting/EDIErrorSent",
}

# Seed 004, "Success Notification Example", verbatim.
SEED_OK_NOTIFICATION = {
    "parameters": {
        "requestType": "GET_ORDER",
        "transactionId": "OR20240903100030",
        "details": {
            "orderNo": "996003767",
            "result": "OK",
            "errorDetails": [{"ErrorDescription": "The request was successfully validated."}],
        },
    },
    "type": "accounting/EDIErrorSent",
}


def resp(status: int, body: object = b"", headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status=status, headers=headers or JSON, body=raw)


def classify(
    response: HttpResponse | None, error: TransportError | None, **settings: Any
) -> Outcome:
    """The outcome the engine records for this answer to a send: the AQI classifier, then the
    core's generic classification and completion (status, Retry-After wait, request id)."""
    return classify_in_core(docrelay_aqi, response, error, settings=settings)


# -- synchronous answers ------------------------------------------------------------------------


def test_200_is_accepted_with_internal_request_id() -> None:
    """200 {internalRequestId} = received, not yet validated; the id is the provider ref."""
    out = classify(resp(200, {"internalRequestId": "23c9579b-baaf-468f-a529-f876226e183c"}), None)
    assert out is not None
    assert out.kind == OutcomeKind.ACCEPTED
    assert out.provider_ref == "23c9579b-baaf-468f-a529-f876226e183c"
    assert out.status == 200


def test_200_without_body_is_still_accepted() -> None:
    out = classify(resp(200, b""), None)
    assert out is not None
    assert out.kind == OutcomeKind.ACCEPTED
    assert out.provider_ref is None
    assert "no internalRequestId" in (out.message or "")


def test_seed_400_is_rejected_with_the_description_and_field() -> None:
    out = classify(resp(400, SEED_400), None)
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert out.status == 400
    assert out.message is not None
    assert out.message.startswith("IncorrectMessage: Body of the request does not conform")
    assert out.provider_status == "IncorrectMessage"
    assert out.field_errors == (
        FieldError(
            field="billToAddress.email",
            message="String 'null' does not validate against format 'email'.",
            rule="#/components/schemas/BillToAddress/allOf/1/properties/email",
        ),
    )
    assert out.rule == "aqi:400-layer1"


def test_400_without_path_keeps_the_description() -> None:
    body = {
        "type": "RequestBody",
        "title": "IncorrectMessage",
        "code": 400,
        "description": "Mandatory field missing",
    }
    out = classify(resp(400, body), None)
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert out.message == "IncorrectMessage: Mandatory field missing"
    assert out.field_errors == ()


def test_400_with_html_body_is_still_rejected() -> None:
    out = classify(resp(400, b"<html><body>Bad Request</body></html>", {}), None)
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED
    assert "Bad Request" in (out.message or "")


@pytest.mark.parametrize(
    "body",
    [
        {
            "type": "Authorization",
            "title": "InvalidSubscriptionKey",
            "code": 500,
            "description": "Access denied due to invalid subscription key. Make sure to provide a "
            "valid key for an active subscription.",
        },
        {"statusCode": 500, "message": "Access denied due to missing subscription key."},
        b"Subscription Key expired",
    ],
)
def test_500_naming_the_key_is_a_config_error(body: object) -> None:
    """Seed 004: a wrong or expired API key answers 500; the body tells it apart."""
    out = classify(resp(500, body), None)
    assert out is not None
    assert out.kind == OutcomeKind.CONFIG_ERROR
    assert out.rule == "aqi:500-bad-key"


def test_500_otherwise_is_retry() -> None:
    """Seed 004: AQI unavailable answers 500; nothing was stored, resend later."""
    body = {
        "type": "Server",
        "title": "InternalServerError",
        "code": 500,
        "description": "The accounting system is temporarily unavailable.",
    }
    out = classify(resp(500, body, {**JSON, "Retry-After": "7"}), None)
    assert out is not None
    assert out.kind == OutcomeKind.RETRY
    assert out.wait == 7.0
    assert out.message == "InternalServerError: The accounting system is temporarily unavailable."


def test_bad_key_markers_are_configurable() -> None:
    body = b"Schluessel ungueltig"
    default = classify(resp(500, body, {}), None)
    custom = classify(resp(500, body, {}), None, bad_key_markers=["schluessel"])
    assert default is not None
    assert custom is not None
    assert (default.kind, custom.kind) == (OutcomeKind.RETRY, OutcomeKind.CONFIG_ERROR)


@pytest.mark.parametrize("status", [401, 403])
def test_gateway_refusals_are_config_errors(status: int) -> None:
    body = {"statusCode": status, "message": "Access denied due to invalid subscription key."}
    out = classify(resp(status, body), None)
    assert out is not None
    assert out.kind == OutcomeKind.CONFIG_ERROR
    assert out.message == "Access denied due to invalid subscription key."


def test_429_is_throttled_with_retry_after() -> None:
    out = classify(
        resp(
            429,
            {"statusCode": 429, "message": "Rate limit is exceeded."},
            {**JSON, "Retry-After": "3"},
        ),
        None,
    )
    assert out is not None
    assert out.kind == OutcomeKind.THROTTLED
    assert out.wait == 3.0


def test_429_without_retry_after_has_no_wait() -> None:
    out = classify(resp(429, b""), None)
    assert out is not None
    assert out.kind == OutcomeKind.THROTTLED
    assert out.wait is None


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(status: int) -> None:
    out = classify(resp(status, b"<html>Service Unavailable</html>", {}), None)
    assert out is not None
    assert out.kind == OutcomeKind.RETRY


def test_404_is_config_error_and_413_rejected() -> None:
    nf = classify(
        resp(
            404,
            {
                "type": "Path",
                "title": "BusinessNotFound",
                "code": 404,
                "description": "Business 9999 does not exist.",
            },
        ),
        None,
    )
    big = classify(resp(413, b""), None)
    assert nf is not None
    assert big is not None
    assert nf.kind == OutcomeKind.CONFIG_ERROR
    assert nf.message == "BusinessNotFound: Business 9999 does not exist."
    assert big.kind == OutcomeKind.REJECTED


def test_unclaimed_status_is_left_to_the_generic_classifier() -> None:
    assert aqi_table(resp(418, b"teapot")) is None
    out = classify(resp(418, b"teapot"), None)
    assert (out.kind, out.rule, out.message) == (OutcomeKind.REJECTED, "generic:4xx", "teapot")


@pytest.mark.parametrize("status", [401, 403, 413, 429, 502, 503, 504])
def test_gateway_answers_are_left_to_the_generic_classifier(status: int) -> None:
    """The API gateway's answers mean what they mean for any HTTP API: the table has no row."""
    assert aqi_table(resp(status, {"statusCode": status, "message": "m"})) is None


def test_request_id_header_is_kept() -> None:
    out = classify(resp(200, {"internalRequestId": "x"}, {**JSON, "X-Request-ID": "tx-1"}), None)
    assert out is not None
    assert out.request_id == "tx-1"


# -- transport errors ---------------------------------------------------------------------------


def test_transport_error_before_sending_is_retry() -> None:
    out = classify(None, TransportError(kind="connect", message="refused", sent=False))
    assert out is not None
    assert out.kind == OutcomeKind.RETRY


def test_transport_error_after_sending_is_unknown() -> None:
    out = classify(None, TransportError(kind="read_timeout", message="timed out", sent=True))
    assert out is not None
    assert out.kind == OutcomeKind.UNKNOWN


# -- never raises -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 413, 429, 500, 502, 503, 418, 302])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff\xfe\x00binary",
        b"[1, 2, 3]",
        b"null",
        b'{"title": {"nested": true}, "description": [1], "internalRequestId": 5}',
        b"<html><head><title>Error</title></head></html>",
        b"x" * 200_000,
        b"[" * 5000,
    ],
)
def test_never_raises(status: int, body: bytes) -> None:
    response = HttpResponse(status=status, headers={"Retry-After": "soon"}, body=body)
    out = aqi_table(response)  # the table itself, not the core's guard around it
    assert out is None or out.kind in set(OutcomeKind)
    assert classify(response, None).rule != "generic:classifier-error"


def test_truncated_json_body() -> None:
    r = HttpResponse(status=400, body=json.dumps(SEED_400).encode()[:50], truncated=True)
    out = classify(r, None)
    assert out is not None
    assert out.kind == OutcomeKind.REJECTED


def test_parse_description_without_schema_id() -> None:
    (fe,) = parse_description("... Path:orderReference Message: String 'X' is too long.")
    assert (fe.field, fe.message, fe.rule) == ("orderReference", "String 'X' is too long.", None)


# -- EDIErrorSent notifications -----------------------------------------------------------------


def test_seed_error_notification_is_rejected_with_every_field_error() -> None:
    n = parse_notification_body(json.dumps(SEED_ERROR_NOTIFICATION).encode())
    assert n is not None
    assert n.key == "0a6b660174a3306898a924639688dffb"
    assert n.outcome.kind == OutcomeKind.REJECTED
    assert n.outcome.provider_status == "ERROR_IN_FILE"
    assert n.outcome.field_errors == (
        FieldError(
            field="LINEITEMSTATUS",
            message="Field LINEITEMSTATUS must not be empty.",
            severity="error",
        ),
        FieldError(
            field="BILLTOLANGUAGECODE",
            message="The content of field BILLTOLANGUAGECODE may only consist of lower case "
            "letters.",
            value="PL",
            severity="error",
        ),
    )
    assert "GET_ORDER ORDPL8100235158" in (n.outcome.message or "")


def test_seed_ok_notification_is_delivered() -> None:
    n = parse_notification_body(json.dumps(SEED_OK_NOTIFICATION).encode())
    assert n is not None
    assert n.key == "OR20240903100030"
    assert n.outcome.kind == OutcomeKind.DELIVERED
    assert n.outcome.message == "GET_ORDER 996003767: The request was successfully validated."
    assert n.outcome.field_errors == ()


def test_the_other_spelling_of_the_type_is_accepted() -> None:
    body = dict(SEED_OK_NOTIFICATION, type="accounting/EdiErrorSent")
    n = parse_notification_body(json.dumps(body).encode())
    assert n is not None
    assert n.outcome.kind == OutcomeKind.DELIVERED


def test_ok_with_truncation_warning_keeps_it() -> None:
    body = json.loads(json.dumps(SEED_OK_NOTIFICATION))
    body["parameters"]["details"]["errorDetails"].append(
        {
            "fieldName": "CARRIER",
            "providedValue": "X" * 40,
            "ErrorDescription": "truncated",
            "status": "W",
        }
    )
    n = parse_notification_body(json.dumps(body).encode())
    assert n is not None
    assert n.outcome.kind == OutcomeKind.DELIVERED
    assert [(f.field, f.severity) for f in n.outcome.field_errors] == [("CARRIER", "warning")]


def test_duplicate_transaction_is_duplicate_not_rejected() -> None:
    body = json.loads(json.dumps(SEED_ERROR_NOTIFICATION))
    body["parameters"]["details"]["errorDetails"] = [
        {
            "fieldName": "TRANSACTIONID",
            "providedValue": "0a6b",
            "ErrorDescription": "Transaction 0a6b has already been processed.",
        }
    ]
    n = parse_notification_body(json.dumps(body).encode())
    assert n is not None
    assert n.outcome.kind == OutcomeKind.DUPLICATE


def test_already_processed_about_another_field_stays_rejected() -> None:
    body = json.loads(json.dumps(SEED_ERROR_NOTIFICATION))
    body["parameters"]["details"]["errorDetails"] = [
        {"fieldName": "INVOICEREFERENCE", "ErrorDescription": "Invoice has already been processed."}
    ]
    n = parse_notification_body(json.dumps(body).encode())
    assert n is not None
    assert n.outcome.kind == OutcomeKind.REJECTED


@pytest.mark.parametrize(
    "body",
    [
        {"type": "accounting/invoiceCreated", "parameters": {}},
        {"type": "subscriptions/expiryWarning"},
    ],
)
def test_other_notification_types_are_ignored(body: object) -> None:
    assert parse_notification_body(json.dumps(body).encode()) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"parameters": {}}',
        b'{"type": "accounting/EDIErrorSent"}',
        b'{"type": "accounting/EDIErrorSent", "parameters": {"details": {"result": "OK"}}}',
        b'{"type": "accounting/EDIErrorSent", "parameters": {"transactionId": "t"}}',
        b'{"type": "accounting/EDIErrorSent", "parameters": {"transactionId": "t", '
        b'"details": {"result": "MAYBE"}}}',
        b'{"type": "accounting/EDIErrorSent", "parameters": {"transactionId": "t", '
        b'"details": {"result": "OK", "errorDetails": "x"}}}',
        b'{"type": "accounting/EDIErrorSent", "parameters": {"transactionId": {"a": 1}, '
        b'"details": {"result": "OK"}}}',
    ],
)
def test_malformed_notifications_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_notification_body(raw)


def test_parser_is_pure() -> None:
    raw = json.dumps(SEED_ERROR_NOTIFICATION).encode()
    assert parse_notification_body(raw) == parse_notification_body(raw)


# -- W / E items (seed 004 field length checks) -------------------------------------------------


def _edi(result: str, items: list[dict[str, object]], **params: object) -> bytes:
    return json.dumps(
        {
            "type": "accounting/EDIErrorSent",
            "parameters": {
                "requestType": "GET_ORDER",
                "transactionId": "t1",
                "details": {"orderNo": "O1", "result": result, "errorDetails": items},
                **params,
            },
        }
    ).encode()


W_ITEM = {"fieldName": "BILLTOSTREET", "providedValue": "x" * 40, "status": "W",
          "ErrorDescription": "truncated"}  # fmt: skip
E_ITEM = {"fieldName": "LINEITEMPRODUCTID", "providedValue": "y" * 40, "status": "E",
          "ErrorDescription": "too long"}  # fmt: skip
PLAIN = {"fieldName": "LINEITEMSTATUS", "ErrorDescription": "must not be empty"}
SUCCESS = {"ErrorDescription": "The request was successfully validated."}


@pytest.mark.parametrize(
    ("result", "items", "kind", "severities"),
    [
        ("OK", [SUCCESS], OutcomeKind.DELIVERED, []),
        ("OK", [W_ITEM, SUCCESS], OutcomeKind.DELIVERED, ["warning"]),
        ("ERROR_IN_FILE", [W_ITEM], OutcomeKind.DELIVERED, ["warning"]),
        ("ERROR_IN_FILE", [W_ITEM, dict(W_ITEM, status="w")], OutcomeKind.DELIVERED,
         ["warning", "warning"]),
        ("ERROR_IN_FILE", [E_ITEM], OutcomeKind.REJECTED, ["error"]),
        ("ERROR_IN_FILE", [W_ITEM, E_ITEM], OutcomeKind.REJECTED, ["warning", "error"]),
        ("ERROR_IN_FILE", [PLAIN], OutcomeKind.REJECTED, ["error"]),
        ("ERROR_IN_FILE", [W_ITEM, PLAIN], OutcomeKind.REJECTED, ["warning", "error"]),
        ("OK", [E_ITEM, SUCCESS], OutcomeKind.REJECTED, ["error"]),
        ("ERROR_IN_FILE", [dict(E_ITEM, status="X")], OutcomeKind.REJECTED, ["error"]),
    ],
)  # fmt: skip
def test_w_and_e_items_decide_the_outcome(
    result: str, items: list[dict[str, object]], kind: OutcomeKind, severities: list[str]
) -> None:
    """All W (or none) -> delivered with warnings; any E (or an untagged error under
    ERROR_IN_FILE) -> rejected, the W items kept as warnings."""
    n = parse_notification_body(_edi(result, items))
    assert n is not None
    assert n.outcome.kind == kind
    assert [f.severity for f in n.outcome.field_errors] == severities
    assert n.outcome.provider_status == result


def test_rejected_message_counts_errors_and_warnings() -> None:
    n = parse_notification_body(_edi("ERROR_IN_FILE", [W_ITEM, E_ITEM]))
    assert n is not None
    assert n.outcome.message == (
        "GET_ORDER O1: ERROR_IN_FILE (1 error(s), 1 warning(s)); correct the data and resend "
        "with the same transactionId"
    )


def test_w_only_error_in_file_message_and_rule() -> None:
    n = parse_notification_body(_edi("ERROR_IN_FILE", [W_ITEM]))
    assert n is not None
    assert n.outcome.rule == "aqi:edi-warnings-only"
    assert (
        n.outcome.message == "GET_ORDER O1: ERROR_IN_FILE with warnings only (status W): processed"
    )
    assert n.outcome.field_errors[0].value == "x" * 40


def test_status_field_and_statuses_are_settings() -> None:
    item = {"fieldName": "F", "ErrorDescription": "d", "Severity": "WARN"}
    n = parse_notification_body(
        _edi("ERROR_IN_FILE", [item]), status_field="severity", warning_statuses=["WARN"]
    )
    assert n is not None
    assert n.outcome.kind == OutcomeKind.DELIVERED
    n = parse_notification_body(_edi("ERROR_IN_FILE", [item]), status_field="status")
    assert n is not None
    assert n.outcome.kind == OutcomeKind.REJECTED


def test_duplicate_transaction_tagged_e_is_still_duplicate() -> None:
    item = {"fieldName": "TRANSACTIONID", "status": "E",
            "ErrorDescription": "Transaction t1 has already been processed."}  # fmt: skip
    n = parse_notification_body(_edi("ERROR_IN_FILE", [W_ITEM, item]))
    assert n is not None
    assert n.outcome.kind == OutcomeKind.DUPLICATE


# -- DataSource -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected", "ok"),
    [
        ("PreProd", "PreProd", True),
        ("preprod", "PreProd", True),
        ("Prod", "PreProd", False),
        ("PreProd", "Prod", False),
        (None, "Prod", True),
        ("Prod", None, False),
        (None, None, True),
    ],
)
def test_data_source_must_match(given: str | None, expected: str | None, ok: bool) -> None:
    extra = {} if given is None else {"DataSource": given}
    raw = _edi("OK", [SUCCESS], **extra)
    if ok:
        assert parse_notification_body(raw, expected_data_source=expected) is not None
    else:
        with pytest.raises(DataSourceMismatch) as err:
            parse_notification_body(raw, expected_data_source=expected)
        assert "refused, not applied" in str(err.value)
        assert "\n" not in str(err.value)


def test_data_source_at_top_level_is_checked_too() -> None:
    raw = json.loads(_edi("OK", [SUCCESS]))
    raw["DataSource"] = "Prod"
    with pytest.raises(DataSourceMismatch):
        parse_notification_body(json.dumps(raw).encode(), expected_data_source="PreProd")


def test_missing_data_source_refused_when_required() -> None:
    with pytest.raises(DataSourceMismatch) as err:
        parse_notification_body(
            _edi("OK", [SUCCESS]), expected_data_source="Prod", require_data_source=True
        )
    assert "has no DataSource" in str(err.value)


def test_data_source_mismatch_is_a_value_error() -> None:
    assert issubclass(DataSourceMismatch, ValueError)
