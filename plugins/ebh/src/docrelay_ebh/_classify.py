"""The eBillingHub Validation API classifier: pure functions, tables of documented answers.

Two phases share one table of status codes (seed 003 and providers.md section 4):

- ``send``: the ``POST .../ValidationRequest`` that creates a validation request
  (201 Created = ``accepted``, the request id becomes ``provider_ref``);
- ``poll``: the ``GET .../ValidationRequest/{id}`` that asks for its progress
  (202 = still running, 200 = done: results decide ``delivered`` or ``rejected``).

Nothing here raises, whatever the body (HTML, truncated JSON, binary, empty, huge).
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay._models import retry_after_seconds

__all__ = [
    "DEFAULT_ERROR_SEVERITIES",
    "DEFAULT_FAILED_STATUSES",
    "DEFAULT_PENDING_STATUSES",
    "classify",
    "classify_transport",
    "id_from_location",
    "is_valid_id",
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

#: Longest provider message kept in an outcome (the body itself is already capped).
_MAX_MESSAGE = 500

#: What the seed's status table says each error code means (used when the body is silent).
_DOCUMENTED: Mapping[int, str] = {
    400: "The request was incorrectly formatted, missing a required header or parameters "
    "were invalid.",
    401: "The Provider Key is not authorized.",
    404: "Not found (unknown API version, path or validation request id).",
    406: "Provided Accept HTTP Header is not supported.",
    413: "The payload is too large.",
    415: "Unsupported Content-Type: the Validation API takes application/xml.",
    500: "Something went wrong.",
}


#: What a 4xx on the poll means when the body is silent (seed 003's words for 400/401/406).
_POLL_MEANING: Mapping[int, str] = {
    400: "The poll request was incorrectly formatted, missing a required header or "
    "parameters were invalid.",
    401: "The Provider Key is not authorized.",
    406: "Provided Accept HTTP Header is not supported.",
}


def is_valid_id(value: object) -> bool:
    """Whether *value* is usable as a validation request id in a URL path."""
    return isinstance(value, str) and bool(_ID_RE.match(value))


def same_host(url: str, base_url: str) -> bool:
    """Whether absolute *url* points at the configured host (scheme, host and port).

    A relative URL (no host) counts as the configured host. Never raises.
    """
    try:
        u, b = urlsplit(url), urlsplit(base_url)
        if not u.scheme and not u.netloc:
            return not url.startswith("//")
        return (
            u.scheme.lower() == b.scheme.lower()
            and (u.hostname or "").lower() == (b.hostname or "").lower()
            and bool(u.hostname)
            and _port(u.scheme, u.port) == _port(b.scheme, b.port)
        )
    except ValueError:
        return False


def _port(scheme: str, port: int | None) -> int | None:
    if port is not None:
        return port
    return {"http": 80, "https": 443}.get(scheme.lower())


def id_from_location(location: str | None, base_url: str) -> str | None:
    """The validation request id at the end of a ``Location`` header on the configured host.

    A Location on another host is ignored (never followed, never trusted).
    """
    if not location or not same_host(location, base_url):
        return None
    try:
        path = urlsplit(location).path
    except ValueError:
        return None
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[-2].lower() != "validationrequest":
        return None
    return parts[-1] if is_valid_id(parts[-1]) else None


def validated_invoice_url(body: Any, base_url: str) -> str | None:
    """``ValidatedInvoiceUrl`` of a completed request, only when on the configured host."""
    if not isinstance(body, Mapping):
        return None
    url = body.get("ValidatedInvoiceUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    return url if same_host(url, base_url) else None


def _json(response: HttpResponse) -> Any:
    try:
        return response.json()
    except Exception:  # noqa: BLE001 - the classifier never raises
        return None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _message(body: Any, response: HttpResponse, default: str) -> str:
    """The provider's ``Message`` (its own words), else a short text body, else *default*."""
    if isinstance(body, Mapping):
        for key in ("Message", "message", "ValidationMessage"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return _clip(value)
        return default
    ctype = (response.header("Content-Type") or "").lower()
    if response.body and "text/plain" in ctype:
        text = response.body[:_MAX_MESSAGE].decode("utf-8", errors="replace")
        if text.strip():
            return _clip(text)
    return default


def _status_value(body: Any) -> int | None:
    if not isinstance(body, Mapping):
        return None
    value = body.get("Status")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _body_id(body: Any) -> str | None:
    if isinstance(body, Mapping):
        value = body.get("Id")
        if is_valid_id(value):
            return str(value)
    return None


def _field_errors(results: Any) -> tuple[FieldError, ...]:
    out: list[FieldError] = []
    if not isinstance(results, list):
        return ()
    for item in results:
        if not isinstance(item, Mapping):
            continue
        message = item.get("Message")
        field = item.get("Identifier")
        severity = item.get("Severity")
        rule = item.get("RulePath")
        out.append(
            FieldError(
                field=str(field) if field is not None else None,
                message=_clip(str(message)) if message is not None else "(no message)",
                severity=str(severity) if severity is not None else None,
                rule=str(rule) if rule is not None else None,
            )
        )
    return tuple(out)


def classify_transport(error: TransportError, phase: str = "send") -> Outcome:
    """No HTTP response: ``retry`` when nothing was sent, else ``unknown`` (may have worked).

    While polling, a read is harmless: the validation request still exists, poll again.
    """
    if error.kind == "tls":
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=f"TLS: {_clip(error.message)}",
            rule="ebh:transport-tls",
        )
    if phase == "poll":
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=f"poll failed ({error.kind}): {_clip(error.message)}; polling again",
            rule="ebh:poll-transport",
        )
    if error.sent:
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            message=f"{error.kind}: {_clip(error.message)}",
            rule="ebh:transport-sent",
        )
    return Outcome(
        kind=OutcomeKind.RETRY,
        message=f"{error.kind}: {_clip(error.message)}",
        rule="ebh:transport-not-sent",
    )


def classify(
    response: HttpResponse | None,
    error: TransportError | None = None,
    *,
    base_url: str = "",
    phase: str = "send",
    error_severities: Collection[str] = DEFAULT_ERROR_SEVERITIES,
    pending_statuses: Collection[int] = DEFAULT_PENDING_STATUSES,
    failed_statuses: Collection[int] = DEFAULT_FAILED_STATUSES,
    poll_wait: float | None = None,
    now: float | None = None,
) -> Outcome:
    """Classify one answer of the Validation API. Never raises.

    :param phase: ``"send"`` for the POST, ``"poll"`` for the GET of a validation request.
    :param base_url: the configured base URL (a ``Location`` elsewhere is ignored).
    :param error_severities: result severities that make a completed validation fail.
    :param pending_statuses: ``Status`` values that mean "not done yet".
    :param failed_statuses: ``Status`` values that mean "the provider failed the validation".
    :param poll_wait: the wait to suggest between polls when the provider gives none.
    """
    try:
        return _classify(
            response,
            error,
            base_url=base_url,
            phase=phase,
            error_severities={s.upper() for s in error_severities},
            pending_statuses=set(pending_statuses),
            failed_statuses=set(failed_statuses),
            poll_wait=poll_wait,
            now=time.time() if now is None else now,
        )
    except Exception as exc:  # noqa: BLE001 - last line of defence: never raise
        return Outcome(
            kind=OutcomeKind.UNKNOWN if phase == "send" else OutcomeKind.ACCEPTED,
            status=response.status if response is not None else None,
            message=f"unclassifiable answer ({type(exc).__name__})",
            rule="ebh:unclassifiable",
        )


def _classify(
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    base_url: str,
    phase: str,
    error_severities: set[str],
    pending_statuses: set[int],
    failed_statuses: set[int],
    poll_wait: float | None,
    now: float,
) -> Outcome:
    if response is None:
        if error is None:
            error = TransportError(kind="other", message="no response", sent=phase == "send")
        return classify_transport(error, phase)

    status = response.status
    body = _json(response)
    request_id = response.header("OperationId") or None
    retry_after = retry_after_seconds(response.header("Retry-After"), now)
    base: dict[str, Any] = {"status": status, "request_id": request_id}

    if phase == "poll":
        return _classify_poll(
            response,
            body,
            base,
            base_url=base_url,
            error_severities=error_severities,
            pending_statuses=pending_statuses,
            failed_statuses=failed_statuses,
            poll_wait=retry_after if retry_after is not None else poll_wait,
        )

    # -- send: POST .../ValidationRequest -------------------------------------------------------
    if 200 <= status < 300:
        ref = _body_id(body) or id_from_location(response.header("Location"), base_url)
        if ref is None:
            # The request was taken (2xx) but we cannot tell which validation request it
            # became: treat as ambiguous, reconcile decides whether to send again.
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                message=_message(body, response, f"{status} without a validation request id"),
                rule="ebh:2xx-no-id",
                **base,
            )
        provider_status = _status_value(body)
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message="validation request created",
            provider_ref=ref,
            provider_status=str(provider_status) if provider_status is not None else None,
            wait=poll_wait,
            rule="ebh:201-created" if status == 201 else f"ebh:{status}-created",
            **base,
        )
    return _classify_error(response, body, base, retry_after, phase="send")


def _classify_error(
    response: HttpResponse,
    body: Any,
    base: dict[str, Any],
    retry_after: float | None,
    *,
    phase: str,
) -> Outcome:
    status = response.status
    msg = _message(body, response, _DOCUMENTED.get(status, f"HTTP {status}"))
    if status == 400:
        return Outcome(kind=OutcomeKind.REJECTED, message=msg, rule="ebh:400-bad-request", **base)
    if status == 401:
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR, message=msg, rule="ebh:401-provider-key", **base
        )
    if status == 403:
        return Outcome(kind=OutcomeKind.CONFIG_ERROR, message=msg, rule="ebh:403", **base)
    if status == 404:
        if phase == "poll":
            return Outcome(
                kind=OutcomeKind.RETRY,
                resend=True,
                message=msg,
                rule="ebh:poll-404-unknown-request",
                **base,
            )
        return Outcome(kind=OutcomeKind.CONFIG_ERROR, message=msg, rule="ebh:404", **base)
    if status == 406:
        return Outcome(kind=OutcomeKind.CONFIG_ERROR, message=msg, rule="ebh:406-accept", **base)
    if status == 413:
        return Outcome(kind=OutcomeKind.REJECTED, message=msg, rule="ebh:413-too-large", **base)
    if status == 415:
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR, message=msg, rule="ebh:415-content-type", **base
        )
    if status == 429:
        return Outcome(
            kind=OutcomeKind.THROTTLED, message=msg, wait=retry_after, rule="ebh:429", **base
        )
    if 500 <= status <= 599:
        return Outcome(
            kind=OutcomeKind.RETRY, message=msg, wait=retry_after, rule=f"ebh:{status}", **base
        )
    if status == 408:
        return Outcome(
            kind=OutcomeKind.RETRY, message=msg, wait=retry_after, rule="ebh:408", **base
        )
    if 400 <= status <= 499:
        return Outcome(kind=OutcomeKind.REJECTED, message=msg, rule=f"ebh:{status}", **base)
    if 300 <= status <= 399:
        location = response.header("Location") or "?"
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=f"unexpected redirect to {_clip(location)[:200]}: check the base_url",
            rule=f"ebh:{status}-redirect",
            **base,
        )
    # 1xx: not part of this API; the request may or may not have been taken.
    return Outcome(
        kind=OutcomeKind.UNKNOWN if phase == "send" else OutcomeKind.ACCEPTED,
        message=msg,
        rule=f"ebh:{status}-unexpected",
        **base,
    )


def _classify_poll(
    response: HttpResponse,
    body: Any,
    base: dict[str, Any],
    *,
    base_url: str,
    error_severities: set[str],
    pending_statuses: set[int],
    failed_statuses: set[int],
    poll_wait: float | None,
) -> Outcome:
    status = response.status
    ref = _body_id(body)
    st = _status_value(body)
    provider_status = str(st) if st is not None else None
    if status == 202:
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=_message(body, response, "The results are not yet ready."),
            provider_ref=ref,
            provider_status=provider_status,
            wait=poll_wait,
            rule="ebh:202-in-progress",
            **base,
        )
    if status == 200:
        if not isinstance(body, Mapping) or st is None:
            return Outcome(
                kind=OutcomeKind.ACCEPTED,
                message="200 without a readable validation request; polling again",
                wait=poll_wait,
                rule="ebh:200-unreadable",
                **base,
            )
        if st in failed_statuses:
            return Outcome(
                kind=OutcomeKind.RETRY,
                resend=True,
                message=_message(body, response, f"validation request ended with Status {st}"),
                provider_ref=ref,
                provider_status=provider_status,
                rule=f"ebh:status-{st}-failed",
                **base,
            )
        if st in pending_statuses:
            return Outcome(
                kind=OutcomeKind.ACCEPTED,
                message=_message(body, response, "validation in progress"),
                provider_ref=ref,
                provider_status=provider_status,
                wait=poll_wait,
                rule=f"ebh:200-status-{st}-pending",
                **base,
            )
        results = body.get("ValidationResults")
        field_errors = _field_errors(results)
        failing = [fe for fe in field_errors if (fe.severity or "").upper() in error_severities]
        message = _message(body, response, "Validation Complete")
        if failing:
            return Outcome(
                kind=OutcomeKind.REJECTED,
                message=message,
                field_errors=field_errors,
                provider_ref=ref,
                provider_status=provider_status,
                rule="ebh:validation-errors",
                **base,
            )
        return Outcome(
            kind=OutcomeKind.DELIVERED,
            message=message,
            field_errors=field_errors,
            provider_ref=ref,
            provider_status=provider_status,
            rule="ebh:validation-complete",
            **base,
        )
    if 200 < status < 300:
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=f"unexpected {status} while polling; polling again",
            provider_ref=ref,
            wait=poll_wait,
            rule=f"ebh:poll-{status}",
            **base,
        )
    if status == 429 or 500 <= status <= 599 or status == 408:
        # A failed read does not lose the validation request: poll again later.
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message=_message(body, response, _DOCUMENTED.get(status, f"HTTP {status}"))
            + "; polling again",
            wait=retry_after_seconds(response.header("Retry-After"), time.time()) or poll_wait,
            rule=f"ebh:poll-{status}",
            **base,
        )
    if status == 404:
        # Not in the seed's table: the validation request is unknown (lost): send again.
        return _classify_error(response, body, base, None, phase="poll")
    if 400 <= status <= 499:
        # Seed 003: the GET's 400 means "incorrectly formatted, missing a required header or
        # parameters were invalid", 401 a ProviderKey that is not authorised, 406 an Accept
        # header that is not supported. Each is about our request, never about the invoice
        # (which was accepted by the POST); so is any other 4xx the seed does not list (the
        # GET has no body that could be at fault). Stop and say so: config error.
        meaning = _POLL_MEANING.get(status, f"HTTP {status} to the poll of the validation request")
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=_message(body, response, meaning),
            rule=f"ebh:poll-{status}-config",
            **base,
        )
    return _classify_error(response, body, base, None, phase="poll")
