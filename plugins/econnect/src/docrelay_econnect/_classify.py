"""The eConnect PSB classifier: one HTTP answer (or transport error) -> one Outcome.

Pure and total: :func:`classify` never raises, whatever the body (HTML, truncated JSON,
binary, empty, huge). The table follows the PSB "Response codes" page (seed 000):

======  =====================================================  ==============
status  meaning at eConnect                                    outcome
======  =====================================================  ==============
200     the document was taken in; body ``{"id": documentId}``  delivered
409     "already processed and thus duplicated"                duplicate
400     validation, syntax or other client error               rejected
413     content too large                                      rejected
401     authentication missing or failed (token expired)       reauth
403     no permission for the resource (party not linked)      config_error
404     resource not found (wrong party id or path)            config_error
5xx     retryable (500, 503, ...)                              retry
======  =====================================================  ==============

Not in the seed, classified anyway so nothing falls through: other 2xx (delivered), 405/406/
415 (config_error: the endpoint or the content type setting is wrong), 408 (retry), 429
(throttled, honouring Retry-After). Any other 4xx is left to the generic classifier.

Error bodies have the shape ``{"helpLink", "message", "code", "requestId", "dateTime"}``
(providers.md 1.6); ``helpLink`` becomes ``error_url`` and ``requestId`` ``request_id``.
ASP.NET problem details (``{"title", "detail", "traceId", "errors": {field: [...]}}``) are
understood too, in case a validation error comes back in that shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import attrs
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay._models import retry_after_seconds

__all__ = ["ErrorBody", "classify", "parse_error_body"]

#: Longest provider message kept in an outcome (characters).
MAX_MESSAGE = 500
#: Most field errors kept from one body.
MAX_FIELD_ERRORS = 50

_REQUEST_ID_HEADERS = ("X-Request-Id", "Request-Id", "X-Correlation-Id", "x-ms-request-id")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")
_SPACE = re.compile(r"\s+")


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


def _field_errors(errors: Any) -> tuple[FieldError, ...]:
    out: list[FieldError] = []
    if isinstance(errors, Mapping):
        for field, messages in errors.items():
            items = messages if isinstance(messages, list) else [messages]
            for m in items:
                msg = _text(m)
                if msg:
                    out.append(FieldError(field=_text(field, 200), message=msg, severity="error"))
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, Mapping):
                msg = _text(item.get("message") or item.get("description") or item.get("detail"))
                if msg:
                    out.append(
                        FieldError(
                            field=_text(item.get("field") or item.get("path"), 200),
                            message=msg,
                            value=_text(item.get("value"), 200),
                            severity=_text(item.get("severity"), 50) or "error",
                            rule=_text(item.get("code") or item.get("rule"), 100),
                        )
                    )
            else:
                msg = _text(item)
                if msg:
                    out.append(FieldError(field=None, message=msg, severity="error"))
    return tuple(out[:MAX_FIELD_ERRORS])


def _looks_like_markup(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype", "<html", "<?xml", "<head", "<body"))


def parse_error_body(response: HttpResponse) -> ErrorBody:
    """Read an eConnect (or problem-details) error body; empty :class:`ErrorBody` if none."""
    data = response.json()
    if isinstance(data, Mapping):
        message = _text(data.get("message") or data.get("Message"))
        if message is None:
            title, detail = _text(data.get("title")), _text(data.get("detail"))
            message = f"{title}: {detail}" if title and detail else (title or detail)
        if message is None:  # an OAuth-style body: {"error": ..., "error_description": ...}
            err, desc = _text(data.get("error"), 100), _text(data.get("error_description"))
            message = f"{err}: {desc}" if err and desc else (err or desc)
        return ErrorBody(
            message=message,
            code=_text(data.get("code") or data.get("Code"), 100),
            help_link=_text(data.get("helpLink") or data.get("type"), 1000),
            request_id=_text(data.get("requestId"), 200),
            trace_id=_text(data.get("traceId"), 200),
            document_id=_text(data.get("id"), 200),
            field_errors=_field_errors(data.get("errors")),
        )
    if data is not None:  # JSON, but not an object (a list, a string, a number)
        if isinstance(data, list):
            return ErrorBody(field_errors=_field_errors(data))
        return ErrorBody(message=_text(data))
    if not response.body:
        return ErrorBody()
    text = response.text(MAX_MESSAGE * 2)
    if _looks_like_markup(text) or "\ufffd" in text or text.lstrip()[:1] in ("{", "["):
        return ErrorBody()  # HTML pages, binary and broken JSON say nothing we can keep
    return ErrorBody(message=_text(text))


def _request_id(response: HttpResponse, body: ErrorBody) -> str | None:
    if body.request_id:
        return body.request_id
    for name in _REQUEST_ID_HEADERS:
        value = _text(response.header(name), 200)
        if value:
            return value
    return None


def _message(body: ErrorBody, default: str) -> str:
    """The provider's words, prefixed with its error code (``API400: ...``)."""
    message = body.message or default
    if body.code and not message.startswith(body.code):
        return f"{body.code}: {message}"
    return message


def _outcome(
    kind: OutcomeKind,
    response: HttpResponse,
    body: ErrorBody,
    rule: str,
    default_message: str | None,
    **extra: Any,
) -> Outcome:
    return Outcome(
        kind=kind,
        status=response.status,
        message=_message(body, default_message) if default_message is not None else body.message,
        field_errors=body.field_errors,
        error_url=body.help_link,
        request_id=_request_id(response, body),
        trace_id=body.trace_id,
        rule=rule,
        **extra,
    )


def _delivered_ref(response: HttpResponse, document_id: str | None) -> str | None:
    data = response.json()
    if isinstance(data, Mapping):
        ref = _text(data.get("id"), 200)
        if ref:
            return ref
    return document_id


def classify(
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    document_id: str | None = None,
    now: float | None = None,
) -> Outcome | None:
    """Classify one eConnect answer; never raises.

    :param document_id: the ``X-EConnect-DocumentId`` that was sent; it is the provider's
        reference when the body does not name one (a 409 carries no useful body).
    :return: the outcome, or ``None`` for a status this table does not claim.
    """
    try:
        return _classify(response, error, document_id=document_id, now=now)
    except Exception as exc:  # noqa: BLE001 - the contract: never raise
        status = response.status if response is not None else None
        return Outcome(
            kind=OutcomeKind.UNKNOWN
            if status is None or 200 <= status < 300
            else OutcomeKind.RETRY,
            status=status,
            message=f"eConnect answer could not be classified ({type(exc).__name__})",
            rule="econnect:unclassifiable",
        )


def _classify(
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    document_id: str | None,
    now: float | None,
) -> Outcome | None:
    if response is None:
        if error is None:
            return None
        message = _text(error.message) or error.kind
        if error.sent:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                message=f"no answer after the document was sent ({error.kind}): {message}; "
                "a resend with the same X-EConnect-DocumentId is safe (409 = already processed)",
                rule="econnect:transport-sent",
            )
        return Outcome(
            kind=OutcomeKind.RETRY,
            message=f"request not sent ({error.kind}): {message}",
            rule="econnect:transport-not-sent",
        )

    status = response.status
    when = time.time() if now is None else now

    if status == 200:
        return Outcome(
            kind=OutcomeKind.DELIVERED,
            status=status,
            provider_ref=_delivered_ref(response, document_id),
            request_id=_request_id(response, ErrorBody()),
            rule="econnect:200-delivered",
        )
    if 200 <= status < 300:
        return Outcome(
            kind=OutcomeKind.DELIVERED,
            status=status,
            provider_ref=_delivered_ref(response, document_id),
            request_id=_request_id(response, ErrorBody()),
            message=f"HTTP {status} (not documented by eConnect; taken as success)",
            rule="econnect:2xx-delivered",
        )

    body = parse_error_body(response)
    if status == 409:
        return _outcome(
            OutcomeKind.DUPLICATE,
            response,
            body,
            "econnect:409-duplicate",
            "already processed (duplicate X-EConnect-DocumentId)",
            provider_ref=body.document_id or document_id,
        )
    if status == 400:
        return _outcome(
            OutcomeKind.REJECTED, response, body, "econnect:400-rejected", "Bad request"
        )
    if status == 413:
        return _outcome(
            OutcomeKind.REJECTED, response, body, "econnect:413-too-large", "Content too large"
        )
    if status == 401:
        return _outcome(
            OutcomeKind.REAUTH,
            response,
            body,
            "econnect:401-reauth",
            "Unauthorized: access token missing, expired or refused",
        )
    if status == 403:
        return _outcome(
            OutcomeKind.CONFIG_ERROR,
            response,
            body,
            "econnect:403-forbidden",
            "Forbidden: the client is not allowed to use this party id or resource",
        )
    if status == 404:
        return _outcome(
            OutcomeKind.CONFIG_ERROR,
            response,
            body,
            "econnect:404-not-found",
            "Not found: check party_id, base_url and send_path",
        )
    if status in (405, 406, 415):
        return _outcome(
            OutcomeKind.CONFIG_ERROR,
            response,
            body,
            f"econnect:{status}-config",
            f"HTTP {status}: check send_path and content_type",
        )
    if status == 408:
        return _outcome(OutcomeKind.RETRY, response, body, "econnect:408-retry", "Request timeout")
    if status == 429:
        return _outcome(
            OutcomeKind.THROTTLED,
            response,
            body,
            "econnect:429-throttled",
            "Too many requests",
            wait=retry_after_seconds(response.header("Retry-After"), when),
        )
    if 500 <= status <= 599:
        return _outcome(
            OutcomeKind.RETRY,
            response,
            body,
            f"econnect:{status}-retry",
            f"HTTP {status} (retryable)",
            wait=retry_after_seconds(response.header("Retry-After"), when),
        )
    return None
