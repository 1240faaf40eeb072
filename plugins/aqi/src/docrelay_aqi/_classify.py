"""AQI's answers, turned into docrelay outcomes: a pure function that never raises.

What AQI documents (seed 004, "Direct Integration - Validations and Error Handling"):

======  =====================================================  ==================================
status  meaning (AQI's words)                                  outcome
======  =====================================================  ==================================
200     received, not yet fully validated;                     ``accepted`` (the EDIErrorSent
        ``{"internalRequestId": "<uuid>"}``                    webhook gives the final answer)
400     data incomplete or incorrect (layer 1);                ``rejected`` with the description
        ``{type, title, code, description}``                   (``Path:`` becomes a field error)
500     AQI unavailable, *or* the API key is wrong/expired     ``config_error`` when the body
                                                               names the key (``bad_key_markers``)
                                                               else ``retry``
======  =====================================================  ==================================

Not in the seed, classified the usual way: 401/403 (the API gateway refusing the subscription
key) and 404 -> ``config_error``; 429 -> ``throttled`` with Retry-After; 413 -> ``rejected``;
502/503/504 -> ``retry``. Anything else is left to docrelay's generic classifier (``None``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay._models import retry_after_seconds

__all__ = ["DEFAULT_BAD_KEY_MARKERS", "classify", "parse_description"]

#: Words in a 500 (or 401/403) body that mean "your subscription key is wrong or expired".
DEFAULT_BAD_KEY_MARKERS: tuple[str, ...] = ("subscription key", "access denied")

_PATH_RE = re.compile(
    r"Path:\s*(?P<path>\S+)\s+Message:\s*(?P<message>.*?)"
    r"(?:\s+Line:\s*\d+,\s*Position:\s*\d+)?"
    r"(?:\s+SchemaId:\s*(?P<schema>\S+))?\s*$",
    re.DOTALL,
)
_MAX_MESSAGE = 2000


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float | bool):
        return str(value)
    return None


def _problem(response: HttpResponse) -> dict[str, Any]:
    data = response.json()
    return data if isinstance(data, dict) else {}


def _text(response: HttpResponse) -> str:
    return response.text(_MAX_MESSAGE).strip()


def parse_description(description: str) -> tuple[FieldError, ...]:
    """The field error inside a layer-1 description (``... Path:billToAddress.email Message:
    ... SchemaId: #/...``), or nothing when the description names no path."""
    m = _PATH_RE.search(description)
    if not m:
        return ()
    return (
        FieldError(
            field=m["path"],
            message=m["message"].strip() or description,
            rule=m["schema"],
        ),
    )


def _message(problem: dict[str, Any], response: HttpResponse) -> str | None:
    title = _str(problem.get("title"))
    description = _str(problem.get("description"))
    # API gateway shapes: {"statusCode": 401, "message": "..."} / {"message": "..."}
    plain = _str(problem.get("message")) or _str(problem.get("Message"))
    if title and description:
        return f"{title}: {description}"[:_MAX_MESSAGE]
    if description or title or plain:
        return (description or title or plain or "")[:_MAX_MESSAGE]
    text = _text(response)
    return text or None


def _names_bad_key(response: HttpResponse, markers: Iterable[str]) -> bool:
    body = response.body.decode("utf-8", errors="replace").lower()
    return any(m and m.lower() in body for m in markers)


def _request_id(response: HttpResponse) -> str | None:
    return response.header("X-Request-ID") or response.header("Request-Id")


def _trace_id(response: HttpResponse) -> str | None:
    return response.header("apim-request-id") or response.header("traceparent")


def classify(
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    bad_key_markers: Iterable[str] = DEFAULT_BAD_KEY_MARKERS,
    now: float | None = None,
) -> Outcome | None:
    """Classify one AQI answer; never raises (any body, any status)."""
    try:
        return _classify(response, error, tuple(bad_key_markers), now)
    except Exception as exc:  # noqa: BLE001 - a classifier must never raise
        status = response.status if response is not None else None
        return Outcome(
            kind=OutcomeKind.UNKNOWN if response is None else OutcomeKind.RETRY,
            status=status,
            message=f"aqi classifier failed on this answer: {type(exc).__name__}",
            rule="aqi:classifier-error",
        )


def _classify(
    response: HttpResponse | None,
    error: TransportError | None,
    markers: tuple[str, ...],
    now: float | None,
) -> Outcome | None:
    if response is None:
        if error is None:
            return None
        if error.sent:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                message=f"{error.kind}: {error.message}",
                rule="aqi:transport-sent",
            )
        return Outcome(
            kind=OutcomeKind.RETRY,
            message=f"{error.kind}: {error.message}",
            rule="aqi:transport-not-sent",
        )

    status = response.status
    problem = _problem(response)
    message = _message(problem, response)
    common: dict[str, Any] = {
        "status": status,
        "request_id": _request_id(response),
        "trace_id": _trace_id(response),
    }

    if 200 <= status < 300:
        ref = _str(problem.get("internalRequestId"))
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message="received by AQI, waiting for the EDIErrorSent notification"
            + ("" if ref else " (the answer carried no internalRequestId)"),
            provider_ref=ref,
            rule="aqi:200-received",
            **common,
        )

    if status == 400:
        description = _str(problem.get("description")) or ""
        return Outcome(
            kind=OutcomeKind.REJECTED,
            message=message or "400 Bad Request",
            field_errors=parse_description(description),
            provider_status=_str(problem.get("title")),
            rule="aqi:400-layer1",
            **common,
        )

    if status in (401, 403):
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=message or f"{status}: subscription key refused",
            rule=f"aqi:{status}-key-refused",
            **common,
        )

    if status == 500:
        if _names_bad_key(response, markers):
            return Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                message=message or "500: the subscription key is wrong or expired",
                rule="aqi:500-bad-key",
                **common,
            )
        return Outcome(
            kind=OutcomeKind.RETRY,
            message=message or "500: AQI unavailable",
            wait=retry_after_seconds(response.header("Retry-After"), now or time.time()),
            rule="aqi:500-unavailable",
            **common,
        )

    if status == 429:
        return Outcome(
            kind=OutcomeKind.THROTTLED,
            message=message or "429 Too Many Requests",
            wait=retry_after_seconds(response.header("Retry-After"), now or time.time()),
            rule="aqi:429-throttled",
            **common,
        )

    if status in (502, 503, 504):
        return Outcome(
            kind=OutcomeKind.RETRY,
            message=message or f"{status}: AQI unavailable",
            wait=retry_after_seconds(response.header("Retry-After"), now or time.time()),
            rule=f"aqi:{status}-unavailable",
            **common,
        )

    if status == 404:
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=message or "404: no such endpoint, business or customer",
            rule="aqi:404-not-found",
            **common,
        )

    if status == 413:
        return Outcome(
            kind=OutcomeKind.REJECTED,
            message=message or "413: request body too large",
            rule="aqi:413-too-large",
            **common,
        )

    return None
