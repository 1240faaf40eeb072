"""The ``accounting/EDIErrorSent`` webhook, parsed into a docrelay Notification (pure).

Payload (seed 004, R-EDI)::

    {"parameters": {"requestType": "GET_ORDER",
                    "transactionId": "0a6b660174a3306898a924639688dffb",
                    "details": {"orderNo": "ORDPL8100235158",
                                "result": "ERROR_IN_FILE",
                                "errorDetails": [{"fieldName": "BILLTOLANGUAGECODE",
                                                  "providedValue": "PL",
                                                  "ErrorDescription": "..."}]}},
     "type": "accounting/EDIErrorSent"}

``OK`` -> ``delivered``; ``ERROR_IN_FILE`` -> ``rejected`` with every field error, except when
the errors say the transactionId was already processed (``duplicate_markers``): then the
provider has the request already and the outcome is ``duplicate``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from docrelay import FieldError, Notification, Outcome, OutcomeKind

__all__ = [
    "DEFAULT_DUPLICATE_MARKERS",
    "EDI_ERROR_SENT",
    "REQUEST_TYPES",
    "parse_notification_body",
]

#: The notification type, as spelled in most of the docs (R-ACC-NOTIF writes "EdiErrorSent").
EDI_ERROR_SENT = "accounting/EDIErrorSent"

#: requestType (upper case in payloads, lower case in the seed's list) -> document kind.
REQUEST_TYPES: dict[str, str] = {
    "GET_ORDER": "order",
    "GET_BOOKING_CONFIRMATION": "invoice",
    "GET_CANCELLATION": "cancellation",
    "GET_GOODWILL": "goodwill",
    "GET_RETURN": "return",
    "GET_PAYMENT": "payment",
}

#: Words in an ERROR_IN_FILE description meaning "this transactionId was already processed".
DEFAULT_DUPLICATE_MARKERS: tuple[str, ...] = ("already been processed", "already processed")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _detail(item: Any) -> FieldError:
    if not isinstance(item, dict):
        return FieldError(field=None, message=_text(item) or "")
    # The docs write "ErrorDescription"; accept the camel-case spelling too.
    message = item.get("ErrorDescription")
    if message is None:
        message = item.get("errorDescription")
    return FieldError(
        field=_text(item.get("fieldName")),
        message=_text(message) or "",
        value=_text(item.get("providedValue")) if "providedValue" in item else None,
        severity=_text(item.get("status")),
    )


def _is_duplicate(error: FieldError, markers: list[str]) -> bool:
    """An error about the transactionId itself ("... has already been processed")."""
    message = error.message.lower()
    about_transaction = (error.field or "").upper().replace("_", "") in {
        "TRANSACTIONID",
        "REQUESTID",
    } or "transaction" in message
    return about_transaction and any(m in message for m in markers)


def parse_notification_body(
    body: bytes,
    *,
    duplicate_markers: Iterable[str] = DEFAULT_DUPLICATE_MARKERS,
) -> Notification | None:
    """Parse one webhook body (ValueError, never TypeError: the hook contract says so).

    :return: the notification, or ``None`` for another notification type (invoiceCreated,
        paymentReceived, ...) that docrelay does not act on.
    :raises ValueError: for a body that is not an AQI notification (not JSON, no ``type``,
        an EDIErrorSent without transactionId or result, an unknown result).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not a JSON notification: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("not an AQI notification: the body is not a JSON object")  # noqa: TRY004
    kind = data.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError("not an AQI notification: no 'type'")
    if kind.strip().lower() != EDI_ERROR_SENT.lower():
        return None

    params = data.get("parameters")
    if not isinstance(params, dict):
        raise ValueError(f"{kind} without 'parameters'")  # noqa: TRY004
    txid = _text(params.get("transactionId"))
    if not txid or not txid.strip() or isinstance(params.get("transactionId"), dict | list):
        raise ValueError(f"{kind} without 'transactionId'")
    txid = txid.strip()
    details = params.get("details")
    if not isinstance(details, dict):
        raise ValueError(f"{kind} for transaction {txid} without 'details'")  # noqa: TRY004
    result = details.get("result")
    if not isinstance(result, str) or not result.strip():
        raise ValueError(f"{kind} for transaction {txid} without 'result'")
    result = result.strip().upper()
    raw_errors = details.get("errorDetails")
    if raw_errors is None:
        raw_errors = []
    if not isinstance(raw_errors, list):
        raise ValueError(  # noqa: TRY004 - the hook contract asks for ValueError
            f"{kind} for transaction {txid}: 'errorDetails' is not a list"
        )
    errors = tuple(_detail(item) for item in raw_errors)
    request_type = _text(params.get("requestType")) or "?"
    order_no = _text(details.get("orderNo"))
    what = f"{request_type.upper()} {order_no}" if order_no else request_type.upper()
    event = f"{EDI_ERROR_SENT}:{result}"

    if result == "OK":
        # A successful answer carries "The request was successfully validated."; items with
        # a field name are warnings (a value truncated, status "W") and are kept as such.
        warnings = tuple(e for e in errors if e.field)
        text = "; ".join(e.message for e in errors if not e.field and e.message)
        return Notification(
            key=txid,
            event=event,
            outcome=Outcome(
                kind=OutcomeKind.DELIVERED,
                message=f"{what}: {text or 'OK'}",
                field_errors=tuple(
                    FieldError(
                        field=w.field,
                        message=w.message,
                        value=w.value,
                        severity=w.severity or "warning",
                    )
                    for w in warnings
                ),
                provider_status="OK",
                rule="aqi:edi-ok",
            ),
        )

    if result == "ERROR_IN_FILE":
        markers = [m.lower() for m in duplicate_markers if m]
        if any(_is_duplicate(e, markers) for e in errors):
            return Notification(
                key=txid,
                event=event,
                outcome=Outcome(
                    kind=OutcomeKind.DUPLICATE,
                    message=f"{what}: " + "; ".join(e.message for e in errors),
                    provider_status="ERROR_IN_FILE",
                    rule="aqi:edi-duplicate-transaction",
                ),
            )
        return Notification(
            key=txid,
            event=event,
            outcome=Outcome(
                kind=OutcomeKind.REJECTED,
                message=f"{what}: ERROR_IN_FILE ({len(errors)} error(s)); "
                "correct the data and resend with the same transactionId",
                field_errors=errors,
                provider_status="ERROR_IN_FILE",
                rule="aqi:edi-error-in-file",
            ),
        )

    raise ValueError(f"{kind} for transaction {txid}: unknown result {result!r}")
