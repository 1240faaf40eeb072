"""The eBillingHub Validation API's own answers: pure functions over seed 003 and providers.md 4.

- :func:`classify_send`: the ``POST .../ValidationRequest`` that creates a validation request
  (201 = ``accepted``, its ``Id`` the provider reference) and the seed's documented statuses;
  every other answer (403, 404, 408, 429, other 5xx, 3xx, no answer) is left to docrelay's
  generic classification (``None``).
- :func:`classify_poll`: the ``GET .../ValidationRequest/{id}`` that asks for its progress
  (202 still running, 200 done: the results decide ``delivered`` or ``rejected``). A poll has
  its own table: a failed read never loses the validation request.

Neither raises, whatever the body (HTML, truncated JSON, binary, empty, huge).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.helpers import body_text, retry_after_seconds, scalar_text

__all__ = [
    "DEFAULT_ERROR_SEVERITIES",
    "DEFAULT_FAILED_STATUSES",
    "DEFAULT_PENDING_STATUSES",
    "classify_poll",
    "classify_send",
    "id_from_location",
    "is_valid_id",
    "poll_transport",
    "same_host",
    "validated_invoice_url",
]

#: Severities that make a completed validation fail (assumption: the seed only shows
#: ``UBF_MESSAGE`` as a failing result; ``ERROR`` is a guess for the eSF family).
DEFAULT_ERROR_SEVERITIES: tuple[str, ...] = ("UBF_MESSAGE", "ERROR")
#: ``Status`` values of a validation request that is still queued (1) or running (2).
DEFAULT_PENDING_STATUSES: tuple[int, ...] = (1, 2)
#: ``Status`` values meaning the provider failed the validation itself (assumption: 3).
DEFAULT_FAILED_STATUSES: tuple[int, ...] = (3,)

#: Validation request ids are GUIDs in every example; anything else is not used in a URL.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]{0,99}$")
_MAX_MESSAGE = 500
_REJECTED, _CONFIG = OutcomeKind.REJECTED, OutcomeKind.CONFIG_ERROR

#: The POST's documented status table (providers.md 4.3): the outcome and the docs' words,
#: used when the body says nothing. 400 and 413 are about the invoice sent: ``rejected``.
_SEND_TABLE: Mapping[int, tuple[OutcomeKind, str, str]] = {
    400: (_REJECTED, "400-bad-request", "The request was incorrectly formatted, missing a "
          "required header or parameters were invalid."),
    401: (_CONFIG, "401-provider-key", "The Provider Key is not authorized."),
    406: (_CONFIG, "406-accept", "Provided Accept HTTP Header is not supported."),
    413: (_REJECTED, "413-too-large", "The payload is too large."),
    415: (_CONFIG, "415-content-type", "Unsupported Content-Type: the Validation API takes "
          "application/xml."),
    500: (OutcomeKind.RETRY, "500", "Something went wrong."),
}  # fmt: skip

#: What a 4xx on the poll means when the body is silent (seed 003's words for 400/401/406).
_POLL_MEANING: Mapping[int, str] = {
    400: "The poll request was incorrectly formatted, missing a required header or "
    "parameters were invalid.",
    401: "The Provider Key is not authorized.",
    404: "Not found: eBillingHub does not know this validation request.",
    406: "Provided Accept HTTP Header is not supported.",
    500: "Something went wrong.",
}


def is_valid_id(value: object) -> bool:
    """Whether *value* is usable as a validation request id in a URL path."""
    return isinstance(value, str) and bool(_ID_RE.match(value))


def same_host(url: str, base_url: str) -> bool:
    """Whether *url* points at the configured host (scheme, host and port); a relative URL
    counts as the configured host. Never raises."""
    try:
        u, b = urlsplit(url), urlsplit(base_url)
        if not u.scheme and not u.netloc:
            return not url.startswith("//")
        return (
            u.scheme.lower() == b.scheme.lower()
            and bool(u.hostname)
            and (u.hostname or "").lower() == (b.hostname or "").lower()
            and _port(u.scheme, u.port) == _port(b.scheme, b.port)
        )
    except ValueError:
        return False


def _port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else {"http": 80, "https": 443}.get(scheme.lower())


def id_from_location(location: str | None, base_url: str) -> str | None:
    """The validation request id ending a ``Location`` on the configured host (a Location on
    another host is never trusted)."""
    if not location or not same_host(location, base_url):
        return None
    try:
        parts = [p for p in urlsplit(location).path.split("/") if p]
    except ValueError:
        return None
    if len(parts) < 2 or parts[-2].lower() != "validationrequest":
        return None
    return parts[-1] if is_valid_id(parts[-1]) else None


def validated_invoice_url(body: Any, base_url: str) -> str | None:
    """``ValidatedInvoiceUrl`` of a completed request, only when on the configured host."""
    url = body.get("ValidatedInvoiceUrl") if isinstance(body, Mapping) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    return url if same_host(url, base_url) else None


def _message(body: Any, response: HttpResponse, default: str) -> str:
    """The provider's ``Message`` (its own words), else a short text body, else *default*."""
    if isinstance(body, Mapping):
        for key in ("Message", "message", "ValidationMessage"):
            if isinstance(value := body.get(key), str) and value.strip():
                return " ".join(value.split())[:_MAX_MESSAGE]
        return default
    if "text/plain" in (response.header("Content-Type") or "").lower():
        return body_text(response, _MAX_MESSAGE) or default
    return default


def _status_value(body: Any) -> int | None:
    value = body.get("Status") if isinstance(body, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _body_id(body: Any) -> str | None:
    value = body.get("Id") if isinstance(body, Mapping) else None
    return value if is_valid_id(value) else None


def _field_errors(results: Any) -> tuple[FieldError, ...]:
    """Every validation result, whatever its severity (``Identifier``, ``Message``,
    ``Severity``, ``RulePath``); items that are not objects are skipped."""
    if not isinstance(results, list):
        return ()
    return tuple(
        FieldError(
            field=scalar_text(item.get("Identifier")),
            message=_clip(item.get("Message")) or "(no message)",
            severity=scalar_text(item.get("Severity")),
            rule=scalar_text(item.get("RulePath")),
        )
        for item in results
        if isinstance(item, Mapping)
    )


def _clip(value: Any) -> str | None:
    text = scalar_text(value)
    return " ".join(text.split())[:_MAX_MESSAGE] if text else None


def classify_send(
    response: HttpResponse, base_url: str, poll_wait: float | None = None
) -> Outcome | None:
    """The answer to the POST; ``None`` for what the generic classification decides."""
    status, body = response.status, response.json()
    if 200 <= status < 300:
        ref = _body_id(body) or id_from_location(response.header("Location"), base_url)
        if ref is None:
            # Taken (2xx), but which validation request it became is unknown: ambiguous,
            # reconcile decides whether to send again.
            message = _message(body, response, f"{status} without a validation request id")
            return Outcome(kind=OutcomeKind.UNKNOWN, message=message, rule="ebh:2xx-no-id")
        st = _status_value(body)
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message="validation request created",
            provider_ref=ref,
            provider_status=None if st is None else str(st),
            wait=poll_wait,
            rule="ebh:201-created" if status == 201 else f"ebh:{status}-created",
        )
    if status not in _SEND_TABLE:
        return None
    kind, rule, words = _SEND_TABLE[status]
    return Outcome(kind=kind, message=_message(body, response, words), rule=f"ebh:{rule}")


def classify_poll(
    response: HttpResponse,
    *,
    error_severities: Collection[str] = DEFAULT_ERROR_SEVERITIES,
    pending_statuses: Collection[int] = DEFAULT_PENDING_STATUSES,
    failed_statuses: Collection[int] = DEFAULT_FAILED_STATUSES,
    poll_wait: float | None = None,
) -> Outcome:
    """The answer to the GET of a validation request (seed 003)."""
    status, body = response.status, response.json()
    request_id = (response.header("OperationId") or "").strip()[:200] or None
    base: dict[str, Any] = {"status": status, "request_id": request_id}
    wait = retry_after_seconds(response.header("Retry-After"))
    wait = poll_wait if wait is None else wait
    if status == 200 and _status_value(body) is not None:
        severities = {s.upper() for s in error_severities}
        return _completed(body, response, base, severities, pending_statuses, failed_statuses, wait)
    if 200 <= status < 300:
        st = _status_value(body)
        message, rule = f"unexpected {status} while polling; polling again", f"ebh:poll-{status}"
        if status == 200:
            message = "200 without a readable validation request; polling again"
            rule = "ebh:200-unreadable"
        elif status == 202:
            message = _message(body, response, "The results are not yet ready.")
            rule = "ebh:202-in-progress"
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=message,
            provider_ref=_body_id(body),
            provider_status=None if st is None else str(st),
            wait=wait,
            rule=rule,
            **base,
        )
    return _poll_failure(response, body, base, wait)


def _poll_failure(
    response: HttpResponse, body: Any, base: dict[str, Any], wait: float | None
) -> Outcome:
    """A poll answered with anything but 2xx: poll again, send again, or a config error."""
    status = response.status
    message = _message(body, response, _POLL_MEANING.get(status, f"HTTP {status}"))
    if status in (408, 429) or status >= 500:
        # A failed read does not lose the validation request: poll again later.
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=message + "; polling again",
            wait=wait,
            rule=f"ebh:poll-{status}",
            **base,
        )
    if status == 404:
        # Not in the seed's table: the validation request is unknown (lost): send again.
        return Outcome(
            kind=OutcomeKind.RETRY,
            resend=True,
            message=message,
            rule="ebh:poll-404-unknown-request",
            **base,
        )
    if 400 <= status < 500:
        # Seed 003: the GET's 400 is a wrong header or parameter, 401 the ProviderKey, 406 the
        # Accept header; the GET has no body that could be at fault, so any 4xx is about our
        # request, never about the invoice (which the POST took): config error.
        return Outcome(kind=_CONFIG, message=message, rule=f"ebh:poll-{status}-config", **base)
    if 300 <= status < 400:
        location = (response.header("Location") or "?")[:200]
        return Outcome(
            kind=_CONFIG,
            message=f"unexpected redirect to {location}: check the base URL",
            rule=f"ebh:{status}-redirect",
            **base,
        )
    # 1xx: not part of this API; the validation request is still there.
    rule = f"ebh:{status}-unexpected"
    return Outcome(kind=OutcomeKind.ACCEPTED, message=message, wait=wait, rule=rule, **base)


def _completed(
    body: Mapping[str, Any],
    response: HttpResponse,
    base: dict[str, Any],
    error_severities: set[str],
    pending_statuses: Collection[int],
    failed_statuses: Collection[int],
    wait: float | None,
) -> Outcome:
    """A 200 with a ``Status``: failed at the provider, still pending, or done."""
    st = _status_value(body)
    ids = {"provider_ref": _body_id(body), "provider_status": str(st), **base}
    if st in failed_statuses:
        message = _message(body, response, f"validation request ended with Status {st}")
        return Outcome(
            kind=OutcomeKind.RETRY,
            resend=True,
            message=message,
            rule=f"ebh:status-{st}-failed",
            **ids,
        )
    if st in pending_statuses:
        message = _message(body, response, "validation in progress")
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=message,
            wait=wait,
            rule=f"ebh:200-status-{st}-pending",
            **ids,
        )
    results = _field_errors(body.get("ValidationResults"))
    failing = any((fe.severity or "").upper() in error_severities for fe in results)
    return Outcome(
        kind=_REJECTED if failing else OutcomeKind.DELIVERED,
        message=_message(body, response, "Validation Complete"),
        field_errors=results,
        rule="ebh:validation-errors" if failing else "ebh:validation-complete",
        **ids,
    )


def poll_transport(error: TransportError) -> Outcome:
    """No answer to a poll: the validation request still exists, poll again."""
    message = f"poll failed ({error.kind}): {' '.join(error.message.split())[:300]}"
    return Outcome(
        kind=OutcomeKind.ACCEPTED, message=message + "; polling again", rule="ebh:poll-transport"
    )
