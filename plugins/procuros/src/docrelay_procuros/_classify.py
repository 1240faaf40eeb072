"""The Procuros response classifier: a pure function, a table of rules, never raises.

The rules follow the Procuros documentation "Tracking document status" (seed 001), the error
handling page and the OpenAPI description of ``POST /v2/transactions``:

======  ==========================================  =================  ===================
status  body                                        outcome            ERP status
======  ==========================================  =================  ===================
201     ``{procurosTransactionId}``                 delivered          ``TRANSMITTED``
202     ``{message}``                               no_action          ``NO_ACTION``
400     ``{message: "Payload already received"}``   duplicate          none (unconfirmed)
400     ``{message, errorUrl}``                     rejected           empty (``None``)
422     ``{message, errors, errorUrl}``             rejected           empty (``None``)
401/403 ``{message}``                               config_error       empty
404     ``{message}``                               config_error       empty
429     ``{message}``                               throttled          empty
5xx     ``{message}``                               retry              empty
======  ==========================================  =================  ===================
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay._models import retry_after_seconds

__all__ = [
    "DEFAULT_DUPLICATE_MESSAGE",
    "NO_ACTION",
    "TRANSMITTED",
    "classify",
]

#: The 400 message by which Procuros says it already has this payload (providers.md §8).
DEFAULT_DUPLICATE_MESSAGE: Final = "Payload already received"
#: ERP status values from "Tracking document status".
TRANSMITTED: Final = "TRANSMITTED"
NO_ACTION: Final = "NO_ACTION"

_MAX_MESSAGE = 1000
_MAX_FIELD_ERRORS = 200


def _body(response: HttpResponse) -> Mapping[str, Any]:
    data = response.json()
    return data if isinstance(data, Mapping) else {}


def _str(value: Any, limit: int = _MAX_MESSAGE) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:limit]
    return None


def _message(response: HttpResponse, body: Mapping[str, Any]) -> str | None:
    msg = _str(body.get("message"))
    if msg is not None:
        return msg
    if body:
        return None
    # Not JSON (an HTML error page from a proxy, a truncated body): keep a short excerpt.
    text = response.text(300).strip()
    if not text:
        return None
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:300] or None


def field_errors(errors: Any) -> tuple[FieldError, ...]:
    """The ``errors`` map (``{"buyer": ["Could not resolve party..."]}``), one per message."""
    out: list[FieldError] = []
    if isinstance(errors, Mapping):
        for field, messages in errors.items():
            items = messages if isinstance(messages, list | tuple) else [messages]
            for m in items:
                if m is None:
                    continue
                text = m if isinstance(m, str) else str(m)
                out.append(FieldError(field=str(field), message=text[:_MAX_MESSAGE]))
                if len(out) >= _MAX_FIELD_ERRORS:
                    return tuple(out)
    elif isinstance(errors, list):
        for m in errors[:_MAX_FIELD_ERRORS]:
            if isinstance(m, str):
                out.append(FieldError(field=None, message=m[:_MAX_MESSAGE]))
    return tuple(out)


def _request_id(response: HttpResponse) -> str | None:
    return response.header("X-Request-Id") or response.header("X-Request-ID")


def classify(
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    duplicate_message: str = DEFAULT_DUPLICATE_MESSAGE,
    duplicate_status: str | None = None,
    now: float | None = None,
) -> Outcome:
    """Classify one answer to ``POST /v2/transactions``. Never raises."""
    try:
        return _classify(response, error, duplicate_message, duplicate_status, now)
    except Exception:  # noqa: BLE001 - the contract: a classifier never raises
        status = response.status if response is not None else None
        if status is not None and 200 <= status < 300:
            return Outcome(OutcomeKind.DELIVERED, status=status, rule="procuros:fallback-2xx")
        return Outcome(
            OutcomeKind.UNKNOWN if response is None or status is None else OutcomeKind.RETRY,
            status=status,
            message="response could not be classified",
            rule="procuros:fallback",
        )


def _classify(
    response: HttpResponse | None,
    error: TransportError | None,
    duplicate_message: str,
    duplicate_status: str | None,
    now: float | None,
) -> Outcome:
    if response is None:
        if error is None:
            return Outcome(OutcomeKind.UNKNOWN, message="no response", rule="procuros:no-response")
        if error.sent:
            return Outcome(
                OutcomeKind.UNKNOWN,
                message=f"{error.kind}: {error.message}",
                rule="procuros:transport-after-send",
            )
        return Outcome(
            OutcomeKind.RETRY,
            message=f"{error.kind}: {error.message}",
            rule="procuros:transport-before-send",
        )

    status = response.status
    body = _body(response)
    message = _message(response, body)
    error_url = _str(body.get("errorUrl"), 2000)
    request_id = _request_id(response)
    common: dict[str, Any] = {
        "status": status,
        "message": message,
        "error_url": error_url,
        "request_id": request_id,
    }

    if status == 201:
        ref = _str(body.get("procurosTransactionId"), 200)
        return Outcome(
            OutcomeKind.DELIVERED,
            provider_ref=ref,
            provider_status=TRANSMITTED,
            rule="procuros:201-transmitted",
            **common,
        )
    if status == 202:
        return Outcome(
            OutcomeKind.NO_ACTION,
            provider_status=NO_ACTION,
            rule="procuros:202-no-action",
            **common,
        )
    if 200 <= status < 300:
        # Not documented for sending; the transaction was taken in all the same.
        return Outcome(
            OutcomeKind.DELIVERED,
            provider_ref=_str(body.get("procurosTransactionId"), 200),
            provider_status=TRANSMITTED,
            rule="procuros:2xx-undocumented",
            **common,
        )
    if status == 400:
        wanted = duplicate_message.strip().casefold()
        if wanted and message is not None and message.strip().casefold().startswith(wanted):
            return Outcome(
                OutcomeKind.DUPLICATE,
                provider_status=duplicate_status,
                rule="procuros:400-payload-already-received",
                **common,
            )
        return Outcome(
            OutcomeKind.REJECTED,
            field_errors=field_errors(body.get("errors")),
            rule="procuros:400-bad-request",
            **common,
        )
    if status == 422:
        return Outcome(
            OutcomeKind.REJECTED,
            field_errors=field_errors(body.get("errors")),
            rule="procuros:422-validation",
            **common,
        )
    if status in (401, 403):
        return Outcome(
            OutcomeKind.CONFIG_ERROR,
            rule="procuros:401-unauthenticated" if status == 401 else "procuros:403-forbidden",
            **common,
        )
    if status == 404:
        return Outcome(OutcomeKind.CONFIG_ERROR, rule="procuros:404-not-found", **common)
    if status == 429:
        wait = retry_after_seconds(
            response.header("Retry-After"), time.time() if now is None else now
        )
        return Outcome(OutcomeKind.THROTTLED, wait=wait, rule="procuros:429-throttled", **common)
    if status == 408:
        return Outcome(OutcomeKind.RETRY, rule="procuros:408-timeout", **common)
    if status == 413:
        return Outcome(OutcomeKind.REJECTED, rule="procuros:413-too-large", **common)
    if status in (405, 406, 415):
        return Outcome(OutcomeKind.CONFIG_ERROR, rule=f"procuros:{status}-endpoint", **common)
    if 400 <= status < 500:
        return Outcome(
            OutcomeKind.REJECTED,
            field_errors=field_errors(body.get("errors")),
            rule="procuros:4xx-client-error",
            **common,
        )
    if 500 <= status < 600:
        wait = retry_after_seconds(
            response.header("Retry-After"), time.time() if now is None else now
        )
        return Outcome(OutcomeKind.RETRY, wait=wait, rule=f"procuros:{status}-server", **common)
    # 1xx/3xx: a redirect means the base URL is wrong (a proxy, http -> https).
    return Outcome(OutcomeKind.CONFIG_ERROR, rule="procuros:unexpected-status", **common)
