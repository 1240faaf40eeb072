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

The items decide (seed 004, field length checks): an item with status ``W`` (a value
truncated, the request processed) is a warning, one with ``E`` (not processed) an error. Items
without a status are errors under ``ERROR_IN_FILE``; under ``OK`` those with a ``fieldName``
are warnings and the others the success text. (The seed names the statuses, not the field:
``status`` is assumed, setting ``detail_status_field``.)

- no error item -> ``delivered``, the warnings kept as ``FieldError(severity="warning")``,
  whatever the ``result`` (a W-only answer may come as ``OK`` or as ``ERROR_IN_FILE``);
- any error item -> ``rejected`` with the errors (``severity="error"``) and the warnings;
  except when an error says the transactionId was already processed (``duplicate_markers``):
  then the provider has the request already and the outcome is ``duplicate``.

``parameters.DataSource`` (``PreProd`` for UAT/test, ``Prod`` for production) must match the
environment docrelay talks to (*expected_data_source*); a mismatch raises
:class:`DataSourceMismatch` (a ``ValueError``: the webhook answers 400, nothing is applied).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from docrelay import FieldError, Notification, Outcome, OutcomeKind

__all__ = [
    "DEFAULT_DUPLICATE_MARKERS",
    "DEFAULT_ERROR_STATUSES",
    "DEFAULT_WARNING_STATUSES",
    "EDI_ERROR_SENT",
    "REQUEST_TYPES",
    "DataSourceMismatch",
    "data_source_of",
    "parse_notification_body",
    "split_details",
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

#: Item statuses (seed 004): W = value truncated, request processed; E = not processed.
DEFAULT_WARNING_STATUSES: tuple[str, ...] = ("W",)
DEFAULT_ERROR_STATUSES: tuple[str, ...] = ("E",)


class DataSourceMismatch(ValueError):
    """A notification of another environment (``DataSource``): refused, never applied."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _key(item: dict[str, Any], name: str) -> Any:
    """``item[name]``, the key matched case-insensitively."""
    if name in item:
        return item[name]
    lower = name.lower()
    return next((v for k, v in item.items() if isinstance(k, str) and k.lower() == lower), None)


def _detail(item: Any, status_field: str) -> tuple[FieldError, str | None]:
    """One errorDetails item and its status (upper case, ``None`` when it has none)."""
    if not isinstance(item, dict):
        return FieldError(field=None, message=_text(item) or ""), None
    # The docs write "ErrorDescription"; accept the camel-case spelling too.
    message = item.get("ErrorDescription")
    if message is None:
        message = item.get("errorDescription")
    status = _text(_key(item, status_field)) if status_field else None
    error = FieldError(
        field=_text(item.get("fieldName")),
        message=_text(message) or "",
        value=_text(item.get("providedValue")) if "providedValue" in item else None,
    )
    return error, (status.strip().upper() or None) if status else None


def split_details(
    result: str,
    items: list[Any],
    *,
    status_field: str = "status",
    warning_statuses: Iterable[str] = DEFAULT_WARNING_STATUSES,
    error_statuses: Iterable[str] = DEFAULT_ERROR_STATUSES,
) -> tuple[tuple[FieldError, ...], tuple[FieldError, ...], tuple[FieldError, ...]]:
    """Sort errorDetails into (all field errors in order, the errors, the success texts).

    Every returned field error carries ``severity`` ``"warning"`` or ``"error"``; the success
    texts (items of an ``OK`` without status or field name) are not field errors.
    """
    warn = {s.strip().upper() for s in warning_statuses if s and s.strip()}
    err = {s.strip().upper() for s in error_statuses if s and s.strip()}
    kept: list[FieldError] = []
    errors: list[FieldError] = []
    texts: list[FieldError] = []
    for raw in items:
        item, status = _detail(raw, status_field)
        if status in warn:
            severity = "warning"
        elif status in err:
            severity = "error"
        elif result == "OK":
            if not item.field:
                texts.append(item)
                continue
            severity = "warning"
        else:
            severity = "error"  # no (or an unknown) status under ERROR_IN_FILE
        fe = FieldError(field=item.field, message=item.message, value=item.value,
                        severity=severity)  # fmt: skip
        kept.append(fe)
        if severity == "error":
            errors.append(fe)
    return tuple(kept), tuple(errors), tuple(texts)


def data_source_of(data: dict[str, Any]) -> str | None:
    """The notification's ``DataSource`` (in ``parameters``, else top level), or ``None``."""
    params = data.get("parameters")
    for where in (params if isinstance(params, dict) else {}, data):
        value = _key(where, "DataSource")
        if value is not None:
            return _text(value)
    return None


def _is_duplicate(error: FieldError, markers: list[str]) -> bool:
    """An error about the transactionId itself ("... has already been processed")."""
    message = error.message.lower()
    about_transaction = (error.field or "").upper().replace("_", "") in {
        "TRANSACTIONID",
        "REQUESTID",
    } or "transaction" in message
    return about_transaction and any(m in message for m in markers)


def _event(body: bytes) -> dict[str, Any] | None:
    """The webhook body as a JSON object, ``None`` for a notification type docrelay ignores."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not a JSON notification: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("not an AQI notification: the body is not a JSON object")  # noqa: TRY004
    kind = data.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError("not an AQI notification: no 'type'")
    return data if kind.strip().lower() == EDI_ERROR_SENT.lower() else None


def _transaction_id(kind: str, params: dict[str, Any]) -> str:
    raw = params.get("transactionId")
    txid = None if isinstance(raw, dict | list) else _text(raw)
    if not txid or not txid.strip():
        raise ValueError(f"{kind} without 'transactionId'")
    return txid.strip()


def _result(kind: str, txid: str, details: Any) -> tuple[str, list[Any], str | None]:
    """``details.result`` (upper case), ``details.errorDetails`` and ``details.orderNo``."""
    if not isinstance(details, dict):
        raise ValueError(f"{kind} for transaction {txid} without 'details'")  # noqa: TRY004
    result = details.get("result")
    if not isinstance(result, str) or not result.strip():
        raise ValueError(f"{kind} for transaction {txid} without 'result'")
    items = details.get("errorDetails")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ValueError(  # noqa: TRY004 - the hook contract asks for ValueError
            f"{kind} for transaction {txid}: 'errorDetails' is not a list"
        )
    result = result.strip().upper()
    if result not in ("OK", "ERROR_IN_FILE"):
        raise ValueError(f"{kind} for transaction {txid}: unknown result {result!r}")
    return result, items, _text(details.get("orderNo"))


def _outcome(
    what: str,
    result: str,
    parts: tuple[tuple[FieldError, ...], tuple[FieldError, ...], tuple[FieldError, ...]],
    markers: list[str],
) -> Outcome:
    """Delivered (no error item), duplicate (an error about the transactionId) or rejected."""
    kept, errors, texts = parts
    if not errors:
        # Processed: OK, or only W items (values truncated) whatever the result says.
        if result == "OK":
            text = "; ".join(t.message for t in texts if t.message) or "OK"
        else:
            text = f"{result} with warnings only (status W): processed"
        return Outcome(
            kind=OutcomeKind.DELIVERED, message=f"{what}: {text}", field_errors=kept,
            provider_status=result,
            rule="aqi:edi-ok" if result == "OK" else "aqi:edi-warnings-only",
        )  # fmt: skip
    if any(_is_duplicate(e, markers) for e in errors):
        return Outcome(
            kind=OutcomeKind.DUPLICATE, message=f"{what}: " + "; ".join(e.message for e in errors),
            provider_status=result, rule="aqi:edi-duplicate-transaction",
        )  # fmt: skip
    warnings = len(kept) - len(errors)
    counted = f"{len(errors)} error(s)" + (f", {warnings} warning(s)" if warnings else "")
    return Outcome(
        kind=OutcomeKind.REJECTED,
        message=f"{what}: {result} ({counted}); "
        "correct the data and resend with the same transactionId",
        field_errors=kept, provider_status=result, rule="aqi:edi-error-in-file",
    )  # fmt: skip


def parse_notification_body(
    body: bytes,
    *,
    duplicate_markers: Iterable[str] = DEFAULT_DUPLICATE_MARKERS,
    status_field: str = "status",
    warning_statuses: Iterable[str] = DEFAULT_WARNING_STATUSES,
    error_statuses: Iterable[str] = DEFAULT_ERROR_STATUSES,
    expected_data_source: str | None = None,
    require_data_source: bool = False,
) -> Notification | None:
    """Parse one webhook body (ValueError, never TypeError: the hook contract says so).

    :param expected_data_source: the ``DataSource`` of docrelay's environment (``None``: the
        environment is not known, so any ``DataSource`` is refused and only a notification
        without one passes).
    :param require_data_source: refuse a notification without ``DataSource`` too.
    :return: the notification, or ``None`` for another notification type (invoiceCreated,
        paymentReceived, ...) that docrelay does not act on.
    :raises DataSourceMismatch: for a notification of another environment.
    :raises ValueError: for a body that is not an AQI notification (not JSON, no ``type``,
        an EDIErrorSent without transactionId or result, an unknown result).
    """
    data = _event(body)
    if data is None:
        return None
    kind = str(data["type"]).strip()
    params = data.get("parameters")
    if not isinstance(params, dict):
        raise ValueError(f"{kind} without 'parameters'")  # noqa: TRY004
    txid = _transaction_id(kind, params)
    _check_data_source(data, txid, expected_data_source, require_data_source)
    result, items, order_no = _result(kind, txid, params.get("details"))
    request_type = (_text(params.get("requestType")) or "?").upper()
    what = f"{request_type} {order_no}" if order_no else request_type
    parts = split_details(
        result, items, status_field=status_field, warning_statuses=warning_statuses,
        error_statuses=error_statuses,
    )  # fmt: skip
    markers = [m.lower() for m in duplicate_markers if m]
    return Notification(
        key=txid, event=f"{EDI_ERROR_SENT}:{result}",
        outcome=_outcome(what, result, parts, markers),
    )  # fmt: skip


def _check_data_source(
    data: dict[str, Any], txid: str, expected: str | None, required: bool
) -> None:
    given = data_source_of(data)
    if given is None or not given.strip():
        if required:
            raise DataSourceMismatch(
                f"notification for transaction {txid} has no DataSource "
                f"(require_data_source is on; expects {expected!r}): refused, not applied"
            )
        return
    if expected is None:
        raise DataSourceMismatch(
            f"notification for transaction {txid} has DataSource {given[:40]!r}, but docrelay "
            "cannot tell its own environment (base_url is none of the known ones): set the "
            "aqi setting env or data_source; refused, not applied"
        )
    if given.strip().lower() != expected.strip().lower():
        raise DataSourceMismatch(
            f"notification for transaction {txid} has DataSource {given[:40]!r}, this docrelay "
            f"expects {expected!r}: refused, not applied"
        )
