"""The eConnect PSB classifier: the answers whose meaning is eConnect's (seed 000).

======  =====================================================  ==============
status  meaning at eConnect                                    outcome
======  =====================================================  ==============
200     the document was taken in; body ``{"id": documentId}``  delivered
409     "already processed and thus duplicated"                duplicate
400     validation, syntax or other client error               rejected
413     content too large                                      rejected
403     no permission for the resource (party not linked)      config_error
404     resource not found (wrong party id or path)            config_error
======  =====================================================  ==============

Other 2xx (not in the seed) are taken as delivered too, with the documentId as reference.
Everything else is docrelay's generic classification, which means the same as the seed: 401
``reauth`` (a fresh token, once), 5xx ``retry`` (seed: "all 5xx are retryable"), 429
``throttled`` with the ``Retry-After`` wait, 405/406/415 ``config_error``, 408 ``retry``, other
4xx ``rejected``, no answer ``retry`` before sending and ``unknown`` after (the resend with the
same documentId is answered 409).

Error bodies have the shape ``{"helpLink", "message", "code", "requestId", "dateTime"}``
(providers.md 1.6); ``helpLink`` becomes ``error_url`` and ``requestId`` ``request_id``.
ASP.NET problem details (``{"title", "detail", "traceId", "errors": {field: [...]}}``) are
understood too, in case a validation error comes back in that shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind
from docrelay.helpers import field_errors

__all__ = ["NAME", "ErrorBody", "classify", "parse_error_body"]

#: The provider id: the entry point's name, ``Document.provider``, ``[providers.econnect]``.
NAME = "econnect"
#: Longest provider message kept in an outcome (characters).
MAX_MESSAGE = 500
#: Most field errors kept from one body.
MAX_FIELD_ERRORS = 50

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")
_SPACE = re.compile(r"\s+")
_MARKUP = ("<!doctype", "<html", "<?xml", "<head", "<body")

#: status -> (kind, rule, what to say when the body says nothing).
_ROWS: Mapping[int, tuple[OutcomeKind, str, str]] = {
    409: (OutcomeKind.DUPLICATE, "409-duplicate",
          "already processed (duplicate X-EConnect-DocumentId)"),
    400: (OutcomeKind.REJECTED, "400-rejected", "Bad request"),
    413: (OutcomeKind.REJECTED, "413-too-large", "Content too large"),
    403: (OutcomeKind.CONFIG_ERROR, "403-forbidden",
          "Forbidden: the client is not allowed to use this party id or resource"),
    404: (OutcomeKind.CONFIG_ERROR, "404-not-found",
          "Not found: check party_id, base_url and send_path"),
}  # fmt: skip


@attrs.frozen
class ErrorBody:
    """What an eConnect error body says (every field optional)."""

    message: str | None = None
    code: str | None = None
    help_link: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    document_id: str | None = None
    field_errors: tuple[FieldError, ...] = ()


def _text(value: Any, limit: int = MAX_MESSAGE) -> str | None:
    """A one-line, bounded string for *value*, or ``None`` when there is nothing to say."""
    if value is None or isinstance(value, (dict, list)):
        return None
    s = _SPACE.sub(" ", _CONTROL.sub(" ", str(value))).strip()
    if not s:
        return None
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def _joined(first: Any, second: Any, limit: int = MAX_MESSAGE) -> str | None:
    a, b = _text(first, limit), _text(second)
    return f"{a}: {b}" if a and b else (a or b)


def _field_errors(errors: Any) -> tuple[FieldError, ...]:
    """Problem details' ``{field: [messages]}``, or a list of ``{field, message}``/strings."""
    if not isinstance(errors, Mapping):
        return field_errors(errors)[:MAX_FIELD_ERRORS]
    out = [
        FieldError(field=_text(field, 200), message=msg, severity="error")
        for field, messages in errors.items()
        for m in (messages if isinstance(messages, list) else [messages])
        if (msg := _text(m))
    ]
    return tuple(out[:MAX_FIELD_ERRORS])


def parse_error_body(response: HttpResponse) -> ErrorBody:
    """Read an eConnect (or problem-details, or OAuth) error body; empty if there is none."""
    data = response.json()
    if isinstance(data, Mapping):
        message = (
            _text(data.get("message") or data.get("Message"))
            or _joined(data.get("title"), data.get("detail"))
            or _joined(data.get("error"), data.get("error_description"), 100)
        )
        return ErrorBody(
            message=message,
            code=_text(data.get("code") or data.get("Code"), 100),
            help_link=_text(data.get("helpLink") or data.get("type"), 1000),
            request_id=_text(data.get("requestId"), 200),
            trace_id=_text(data.get("traceId"), 200),
            document_id=_text(data.get("id"), 200),
            field_errors=_field_errors(data.get("errors")),
        )
    if isinstance(data, list):
        return ErrorBody(field_errors=_field_errors(data))
    if data is not None:  # JSON, but a string or a number
        return ErrorBody(message=_text(data))
    text = response.text(MAX_MESSAGE * 2)
    head = text.lstrip()[:200].lower()
    if not text or head.startswith(_MARKUP) or "\ufffd" in text or head[:1] in ("{", "["):
        return ErrorBody()  # HTML pages, binary and broken JSON say nothing we can keep
    return ErrorBody(message=_text(text))


def _message(body: ErrorBody, default: str) -> str:
    """The provider's words, prefixed with its error code (``API400: ...``)."""
    message = body.message or default
    if body.code and not message.startswith(body.code):
        return f"{body.code}: {message}"
    return message


def classify(response: HttpResponse, *, document_id: str | None = None) -> Outcome | None:
    """The outcome of one eConnect answer; ``None`` leaves it to the generic classification.

    :param document_id: the ``X-EConnect-DocumentId`` that was sent; it is the provider's
        reference when the body does not name one (a 409 carries no useful body).
    """
    status = response.status
    if 200 <= status < 300:
        data = response.json()
        ref = _text(data.get("id"), 200) if isinstance(data, Mapping) else None
        return Outcome(
            kind=OutcomeKind.DELIVERED,
            provider_ref=ref or document_id,
            message=None if status == 200 else f"HTTP {status} (not documented by eConnect; "
            "taken as success)",
            rule=f"{NAME}:{'200' if status == 200 else '2xx'}-delivered",
        )  # fmt: skip
    if status not in _ROWS:
        return None
    kind, rule, default = _ROWS[status]
    body = parse_error_body(response)
    return Outcome(
        kind=kind,
        message=_message(body, default),
        field_errors=body.field_errors,
        error_url=body.help_link,
        request_id=body.request_id,
        trace_id=body.trace_id,
        provider_ref=(body.document_id or document_id) if status == 409 else None,
        rule=f"{NAME}:{rule}",
    )
