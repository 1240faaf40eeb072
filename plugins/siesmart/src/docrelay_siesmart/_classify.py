"""The SieSmart classifier: the answers whose meaning is SieSmart's own.

Pure functions, no I/O. The table follows the "General responses to API requests" of the
SieSmart getting-started page (seed 002):

====== ======================================================== =============================
status meaning (provider's words)                               outcome
====== ======================================================== =============================
200    The request has been successful                          delivered (create: the body
                                                                must carry the proposal id,
                                                                else ``unknown`` -> reconcile)
401    The auth token is invalid or not present                 reauth (token refreshed once)
403    The requested operation is not authorized for your token config_error
412    For POST requests, the 'If-Match' header is missing      stale (re-read, see
       (and, assumed, a stale If-Match)                         ``refresh_resource``); on a
                                                                *create* config_error
429    The request rate limit has been reached                  throttled
500    Internal server error                                    retry
503    Service unavailable                                      retry
====== ======================================================== =============================

The documented statuses keep the provider's words (the seed's description when the body has
none) and the trace id; their outcome kind is the generic one, and the core adds the
``Retry-After`` wait. Not in the seed: a 404 with the Error object is ``rejected`` (the
proposal does not exist), other 4xx are ``rejected`` with their field errors. Everything else
(404 without an Error object, 405, 3xx, other 5xx, transport errors) is left to docrelay's
generic classification (``None``).

The "Error" object's fields are not public. Assumed: ``{"code", "message", "traceId"}`` plus
field errors under ``errors`` (``{"field", "message", "rejectedValue", "code"}``); the decision
pre-check's documented ``preconditionViolations: [{code, userMessage}]`` is read as field
errors too. Other common spellings are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind
from docrelay.helpers import body_text

__all__ = ["NAME", "SEED_MESSAGES", "TRACE_HEADER", "classify", "proposal_id_from"]

NAME = "siesmart"
#: The response header that carries the request identifier (seed 002).
TRACE_HEADER = "X-B2B-TRACE-ID"

_TRACE_FIELDS = ("traceId", "traceID", "trace_id", "requestId", "request_id", "b2bTraceId")
_MESSAGE_FIELDS = ("message", "userMessage", "detail", "error_description", "title", "error")
_CODE_FIELDS = ("code", "errorCode", "error")
_FIELD_LISTS = ("errors", "fieldErrors", "preconditionViolations", "violations", "details")
_ID_FIELDS = ("id", "proposalId", "proposal-id", "proposal_id")

#: The seed's table: the provider's words and the outcome of each documented error status.
SEED_MESSAGES: Mapping[int, str] = {
    401: "The auth token is invalid or not present",
    403: "The requested operation is not authorized for your token",
    412: "For POST requests, the 'If-Match' header is missing",
    429: "The request rate limit has been reached",
    500: "Internal server error",
    503: "Service unavailable",
}
_SEED_KINDS: Mapping[int, OutcomeKind] = {
    401: OutcomeKind.REAUTH,
    403: OutcomeKind.CONFIG_ERROR,
    429: OutcomeKind.THROTTLED,
    500: OutcomeKind.RETRY,
    503: OutcomeKind.RETRY,
}


def _s(value: Any, limit: int = 500) -> str | None:
    """A short one-line string for a scalar *value*, or ``None``."""
    if value is None or isinstance(value, dict | list):
        return None
    return " ".join(str(value).split())[:limit] or None


def _first(body: Mapping[str, Any], names: tuple[str, ...], limit: int = 500) -> str | None:
    return next((t for n in names if (t := _s(body.get(n), limit))), None)


def error_object(response: HttpResponse) -> dict[str, Any]:
    """The provider's Error object (some APIs wrap it in ``error``), ``{}`` for none."""
    data = response.json()
    if not isinstance(data, dict):
        return {}
    inner = data.get("error")
    if isinstance(inner, dict) and not any(k in data for k in ("message", "code")):
        return inner
    return data


def trace_id_from(response: HttpResponse, body: Mapping[str, Any], header: str) -> str | None:
    """The request id: the trace header, else the Error object's trace field."""
    return _s(response.header(header), 200) or _first(body, _TRACE_FIELDS, 200)


def proposal_id_from(body: Any) -> str | None:
    """The proposal id in a create/GET answer (``id``; other spellings accepted)."""
    if not isinstance(body, dict):
        return None
    for name in _ID_FIELDS:
        value = body.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and _s(value, 200):
            return _s(value, 200)
    return proposal_id_from(body.get("proposal"))


def _field_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """Every error of every known list; one without a field is named by its list."""
    out: list[FieldError] = []
    for list_name in _FIELD_LISTS:
        items = body.get(list_name)
        for item in (items if isinstance(items, list) else [])[:200]:
            if not isinstance(item, dict):
                if text := _s(item):
                    out.append(FieldError(field=list_name, message=text))
                continue
            code = _first(item, _CODE_FIELDS, 100)
            field = _s(item.get("field") or item.get("path") or item.get("property"), 200)
            out.append(
                FieldError(
                    field=field or list_name,
                    message=_first(item, _MESSAGE_FIELDS) or code or "invalid",
                    value=_s(item.get("rejectedValue", item.get("value")), 200),
                    severity=_s(item.get("severity"), 50),
                    rule=code,
                )
            )
    return out


def _message(status: int, body: Mapping[str, Any], response: HttpResponse) -> str | None:
    text = _first(body, _MESSAGE_FIELDS)
    if text:
        code = _first(body, _CODE_FIELDS, 100)
        return f"{code}: {text}" if code and code != text else text
    return SEED_MESSAGES.get(status) or body_text(response)


def _success(body: Mapping[str, Any], kind: str | None) -> Outcome:
    ref = proposal_id_from(body)
    said = "The request has been successful"
    if kind == "proposal" and ref is None:
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            message="proposal created but the answer carries no proposal id (look it up by label)",
            rule=f"{NAME}:200-create-without-id",
        )
    if kind == "decision":
        decision = body.get("decision")
        status = _s(decision.get("decisionStatus"), 100) if isinstance(decision, dict) else None
        rule = f"{NAME}:200-decision"
        return Outcome(
            kind=OutcomeKind.DELIVERED,
            message=said,
            provider_ref=ref,
            provider_status=status,
            rule=rule,
        )
    rule = f"{NAME}:200-created" if kind == "proposal" else f"{NAME}:200"
    return Outcome(kind=OutcomeKind.DELIVERED, message=said, provider_ref=ref, rule=rule)


def _rejects(status: int, body: Mapping[str, Any]) -> bool:
    """A 4xx that is about the document: a 404 only with the Error object (else the URL is
    wrong); 405-408 and 415 are docrelay's generic meaning."""
    if status == 404:
        return any(k in body for k in ("code", "message", *_TRACE_FIELDS))
    return 400 <= status < 500 and status not in (405, 406, 407, 408, 415)


def classify(
    response: HttpResponse, *, kind: str | None = None, trace_header: str = TRACE_HEADER
) -> Outcome | None:
    """The outcome of one SieSmart answer (*kind*: the document kind, ``proposal`` = create),
    ``None`` where docrelay's generic classification decides."""
    status = response.status
    body = error_object(response)
    message = _message(status, body, response)
    if 200 <= status < 300:
        outcome = _success(body, kind)
    elif status == 412:
        stale = kind != "proposal"  # a create needs no If-Match: a re-read cannot help
        outcome = Outcome(
            kind=OutcomeKind.STALE if stale else OutcomeKind.CONFIG_ERROR,
            message=message,
            rule=f"{NAME}:412" if stale else f"{NAME}:412-on-create",
        )
    elif status in _SEED_KINDS:
        outcome = Outcome(kind=_SEED_KINDS[status], message=message, rule=f"{NAME}:{status}")
    elif _rejects(status, body):
        rule = f"{NAME}:404-not-found" if status == 404 else f"{NAME}:{status}"
        errors = _field_errors(body)
        outcome = Outcome(
            kind=OutcomeKind.REJECTED, message=message, field_errors=errors, rule=rule
        )
    else:
        return None
    return attrs.evolve(
        outcome, status=status, trace_id=trace_id_from(response, body, trace_header)
    )
