"""Small public helpers for provider plugins' hooks and classifiers.

Everything a plugin needs from docrelay is public: the value objects and
:data:`docrelay.hookimpl` in ``docrelay``, the sandbox base class in :mod:`docrelay.sandbox`,
the conformance kit in :mod:`docrelay.testing`, and these helpers. A plugin that imports a
``docrelay._private`` name breaks when docrelay's internals move.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ._classify import classify_generic
from ._models import Document, FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from ._models import retry_after_seconds as _retry_after_seconds
from ._redact import redact as _redact
from .exceptions import DocumentError

__all__ = [
    "body_text",
    "field_errors",
    "generic_outcome",
    "json_object",
    "redact",
    "retry_after_seconds",
    "scalar_text",
    "transport_outcome",
]


def redact(text: str) -> str:
    """*text* with every secret docrelay knows of masked as ``***``, in any encoding (for an
    observer plugin that puts a request's own text, such as its URL path, in a channel of
    its own).

    >>> redact("nothing secret here")
    'nothing secret here'
    """
    return _redact(text)


def json_object(document: Document) -> dict[str, Any]:
    """The document's payload as a JSON object; :class:`~docrelay.DocumentError` (the
    document is rejected before sending) when it is not one.

    >>> json_object(Document(id="1", provider="p", payload=b'{"n": 1}'))
    {'n': 1}
    >>> json_object(Document(id="1", provider="p", payload=b"[1]"))
    Traceback (most recent call last):
    ...
    docrelay.exceptions.DocumentError: document 1: the payload is not a JSON object
    """
    try:
        data = document.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise DocumentError(f"document {document.id}: the payload is not a JSON object")
    return data


def body_text(response: HttpResponse, limit: int = 300) -> str | None:
    """A short, redacted, one-line text of a response body for a message (``None`` when the
    body is empty or an HTML page).

    >>> body_text(HttpResponse(status=502, body=b"Bad   gateway  "))
    'Bad gateway'
    """
    text = " ".join(redact(response.text(4 * limit)).split())[:limit]
    if not text or text.startswith("<"):
        return None
    return text


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP date);
    ``None`` when it is absent or invalid. *now* defaults to the current time.

    >>> retry_after_seconds("7")
    7.0
    >>> retry_after_seconds("soon") is None
    True
    """
    return _retry_after_seconds(value, time.time() if now is None else now)


def scalar_text(value: Any) -> str | None:
    """*value* as a stripped string when it is a non-empty string or number, else ``None``
    (for reading fields of untrusted JSON bodies).

    >>> scalar_text(" 42 "), scalar_text(7), scalar_text({}), scalar_text(True)
    ('42', '7', None, None)
    """
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value).strip() or None
    return None


def field_errors(
    items: Any,
    *,
    field: str = "field",
    message: str = "message",
    value: str = "value",
) -> tuple[FieldError, ...]:
    """Field errors from a provider's error list: each item a mapping (read with the given
    key names) or a plain message. Anything that is not a list gives ``()``; it never raises.

    >>> field_errors([{"field": "number", "message": "required"}, "total is wrong", None])
    (FieldError(field='number', message='required', value=None, severity=None, rule=None), \
FieldError(field=None, message='total is wrong', value=None, severity=None, rule=None))
    """
    if not isinstance(items, Iterable) or isinstance(items, str | bytes | Mapping):
        return ()
    out: list[FieldError] = []
    for item in items:
        if isinstance(item, Mapping):
            out.append(
                FieldError(
                    field=scalar_text(item.get(field)),
                    message=scalar_text(item.get(message)) or "invalid",
                    value=scalar_text(item.get(value)),
                )
            )
        elif (text := scalar_text(item)) is not None:
            out.append(FieldError(field=None, message=text))
    return tuple(out)


def generic_outcome(response: HttpResponse | None, error: TransportError | None = None) -> Outcome:
    """What docrelay's generic classification answers from the status (or the transport
    error) alone: for a classifier that keeps the generic meaning of an answer but adds its
    provider's own words (the portal link every error of the provider carries). The core
    completes it as any outcome (the ``Retry-After`` wait, the request id).

    >>> generic_outcome(HttpResponse(status=403, body=b'{"message": "no access"}'))
    Outcome(kind=<OutcomeKind.CONFIG_ERROR: 'config_error'>, status=403, message='no access', \
field_errors=(), error_url=None, request_id=None, trace_id=None, wait=None, provider_ref=None, \
provider_status=None, resend=False, rule='generic:403')
    """
    return classify_generic(response, error)


def transport_outcome(error: TransportError, provider: str) -> Outcome:
    """The outcome of a request that got no answer: ``unknown`` when it may have reached the
    provider (``error.sent``: a read timeout, a reset after the body went out), else
    ``retry``. Never ``retry`` after sending: the resend could be a second business effect.

    >>> transport_outcome(TransportError("read_timeout", "timed out", sent=True), "acme").kind
    <OutcomeKind.UNKNOWN: 'unknown'>
    """
    sent = error.sent
    return Outcome(
        kind=OutcomeKind.UNKNOWN if sent else OutcomeKind.RETRY,
        message=f"{error.kind}: {error.message}",
        rule=f"{provider}:transport-{'after' if sent else 'before'}-send",
    )
