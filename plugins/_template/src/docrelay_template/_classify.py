"""The template provider's classifier: a pure function from a response to an outcome.

Kept apart from the hooks so that it can be tested as a table, without an engine. It must
never raise, whatever the body (HTML, truncated JSON, binary, empty).

The provider's documented answers to ``POST /v1/documents``:

======  ===========================================  ============================
status  body                                         outcome
======  ===========================================  ============================
200     ``{"id": "...", "status": "received"}``      delivered
201     ``{"id": "...", "status": "received"}``      delivered
409     ``{"message": "...", "id": "..."}``          duplicate (already received)
400     ``{"message": "...", "errors": [...]}``      rejected, with field errors
413     ``{"message": "..."}``                       rejected (payload too large)
422     ``{"message": "...", "errors": [...]}``      rejected, with field errors
401     ``{"message": "..."}``                       config_error (API key)
403     ``{"message": "..."}``                       config_error (permissions)
429     ``Retry-After`` header                       throttled, waiting as asked
5xx     anything                                     retry (``Retry-After`` kept)
======  ===========================================  ============================

A transport error is ``unknown`` when the request may have reached the provider
(``error.sent``), else ``retry``.
"""

from __future__ import annotations

import time
from typing import Any

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay._models import retry_after_seconds

__all__ = ["classify", "parse_error_body"]

NAME = "template"


def _text(value: Any) -> str | None:
    """*value* as a string when it is a non-empty scalar, else ``None``."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value).strip()
        return text or None
    return None


def parse_error_body(response: HttpResponse) -> tuple[str | None, tuple[FieldError, ...]]:
    """The provider's message and field errors from an error body (empty when unreadable)."""
    body = response.json()
    if not isinstance(body, dict):
        text = response.text(300).strip()
        return (text or None), ()
    message = _text(body.get("message"))
    errors = body.get("errors")
    field_errors: list[FieldError] = []
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict):
                field_errors.append(
                    FieldError(
                        field=_text(item.get("field")),
                        message=_text(item.get("message")) or "invalid",
                        value=_text(item.get("value")),
                    )
                )
            elif _text(item) is not None:
                field_errors.append(FieldError(field=None, message=str(item)))
    return message, tuple(field_errors)


def _provider_ref(response: HttpResponse) -> str | None:
    body = response.json()
    return _text(body.get("id")) if isinstance(body, dict) else None


def classify(response: HttpResponse | None, error: TransportError | None) -> Outcome | None:
    """The outcome of one answer of the template provider; ``None`` leaves it to the generic
    classifier (statuses the provider does not document, such as 404)."""
    if error is not None:
        if error.sent:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                message=f"{error.kind}: {error.message}",
                rule=f"{NAME}:transport-after-send",
            )
        return Outcome(
            kind=OutcomeKind.RETRY,
            message=f"{error.kind}: {error.message}",
            rule=f"{NAME}:transport-before-send",
        )
    if response is None:
        return None

    status = response.status
    request_id = response.header("X-Request-Id")
    wait = retry_after_seconds(response.header("Retry-After"), time.time())
    message, field_errors = parse_error_body(response)

    def outcome(kind: OutcomeKind, rule: str, **extra: Any) -> Outcome:
        return Outcome(
            kind=kind, status=status, request_id=request_id, rule=f"{NAME}:{rule}", **extra
        )

    if status in (200, 201):
        return outcome(
            OutcomeKind.DELIVERED, f"{status}-received", provider_ref=_provider_ref(response)
        )
    if status == 409:
        return outcome(
            OutcomeKind.DUPLICATE,
            "409-duplicate",
            message=message,
            provider_ref=_provider_ref(response),
        )
    if status in (400, 413, 422):
        return outcome(
            OutcomeKind.REJECTED, f"{status}-rejected", message=message, field_errors=field_errors
        )
    if status in (401, 403):
        return outcome(OutcomeKind.CONFIG_ERROR, f"{status}-credentials", message=message)
    if status == 429:
        return outcome(OutcomeKind.THROTTLED, "429-throttled", message=message, wait=wait)
    if 500 <= status <= 599:
        return outcome(OutcomeKind.RETRY, "5xx-retry", message=message, wait=wait)
    return None
