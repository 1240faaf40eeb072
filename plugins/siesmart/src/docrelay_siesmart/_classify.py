"""The SieSmart classifier: one response (or transport error) -> one :class:`Outcome`.

Pure functions, no I/O, never raise. The table follows the "General responses to API
requests" of the SieSmart getting-started page (seed 002):

====== ======================================================== =============================
status meaning (provider's words)                               outcome
====== ======================================================== =============================
200    The request has been successful                          delivered (create: the body
                                                                must carry the proposal id,
                                                                else ``unknown`` -> reconcile)
401    The auth token is invalid or not present                 reauth (the engine refreshes
                                                                the token once)
403    The requested operation is not authorized for your token config_error
412    For POST requests, the 'If-Match' header is missing      stale (refresh the ETag, retry
       (and, assumed, a stale If-Match)                         once; on a proposal *create*
                                                                config_error)
429    The request rate limit has been reached                  throttled (wait = Retry-After
                                                                if any; none is promised)
500    Internal server error                                    retry
503    Service unavailable                                      retry
====== ======================================================== =============================

Not in the seed, classified by HTTP meaning: other 2xx delivered; 400/409/413/422 and other
4xx rejected with the provider's words; 404 with a provider Error object rejected (the
proposal does not exist), 404 without one config_error (wrong base URL); 405/406 and 3xx
config_error; other 5xx retry.

The "Error" object's fields are not public. Assumed: ``{"code", "message", "traceId"}``
plus an optional list of field errors under ``errors`` (``{"field", "message",
"rejectedValue", "code"}``); the decision pre-check's documented
``preconditionViolations: [{code, userMessage}]`` is read as field errors too. Other common
spellings (``traceID``, ``trace_id``, ``requestId``, ``userMessage``, ``detail``,
``error_description``) are accepted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay._models import retry_after_seconds

__all__ = [
    "TRACE_HEADER",
    "classify",
    "error_object",
    "proposal_id_from",
    "trace_id_from",
]

#: The response header that carries the request identifier (seed 002).
TRACE_HEADER = "X-B2B-TRACE-ID"

_TRACE_FIELDS = ("traceId", "traceID", "trace_id", "requestId", "request_id", "b2bTraceId")
_MESSAGE_FIELDS = ("message", "userMessage", "detail", "error_description", "title", "error")
_CODE_FIELDS = ("code", "errorCode", "error")
_FIELD_LISTS = ("errors", "fieldErrors", "preconditionViolations", "violations", "details")
_ID_FIELDS = ("id", "proposalId", "proposal-id", "proposal_id")

#: The provider's own words for the documented statuses (used when the body has none).
SEED_MESSAGES: Mapping[int, str] = {
    401: "The auth token is invalid or not present",
    403: "The requested operation is not authorized for your token",
    412: "For POST requests, the 'If-Match' header is missing",
    429: "The request rate limit has been reached",
    500: "Internal server error",
    503: "Service unavailable",
}

_MAX_TEXT = 500
_MAX_FIELD_ERRORS = 200


def _s(value: Any, limit: int = _MAX_TEXT) -> str | None:
    """A short one-line string for *value*, or ``None`` for nothing useful."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    return text[:limit]


def error_object(response: HttpResponse) -> dict[str, Any] | None:
    """The provider's Error object, when the body is a JSON object (some APIs wrap it)."""
    try:
        data = response.json()
    except Exception:  # noqa: BLE001 - never raise, whatever the body
        return None
    if not isinstance(data, dict):
        return None
    inner = data.get("error")
    if isinstance(inner, dict) and not any(k in data for k in ("message", "code")):
        return inner
    return data


def trace_id_from(
    response: HttpResponse, body: Mapping[str, Any] | None = None, header: str = TRACE_HEADER
) -> str | None:
    """The request id: the ``X-B2B-TRACE-ID`` header, else the Error object's trace field."""
    try:
        value = _s(response.header(header), 200)
    except Exception:  # noqa: BLE001
        value = None
    if value:
        return value
    if body:
        for name in _TRACE_FIELDS:
            value = _s(body.get(name), 200)
            if value:
                return value
    return None


def proposal_id_from(body: Any) -> str | None:
    """The proposal id in a create/GET answer (``id``; other spellings accepted)."""
    if not isinstance(body, dict):
        return None
    for name in _ID_FIELDS:
        value = body.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            text = _s(value, 200)
            if text:
                return text
    inner = body.get("proposal")
    if isinstance(inner, dict):
        return proposal_id_from(inner)
    return None


def _field_errors(body: Mapping[str, Any]) -> list[FieldError]:
    out: list[FieldError] = []
    for list_name in _FIELD_LISTS:
        items = body.get(list_name)
        if not isinstance(items, list):
            continue
        for item in items[:_MAX_FIELD_ERRORS]:
            if isinstance(item, dict):
                message = None
                for name in _MESSAGE_FIELDS:
                    message = _s(item.get(name))
                    if message:
                        break
                code = None
                for name in _CODE_FIELDS:
                    code = _s(item.get(name), 100)
                    if code:
                        break
                # Errors without a field (the decision pre-check's violations) are named by
                # the list they came from: docrelay's store cannot reload field=None yet.
                field = (
                    _s(item.get("field") or item.get("path") or item.get("property"), 200)
                    or list_name
                )
                value = item.get("rejectedValue", item.get("value"))
                out.append(
                    FieldError(
                        field=field,
                        message=message or code or "invalid",
                        value=_s(value, 200),
                        severity=_s(item.get("severity"), 50),
                        rule=code,
                    )
                )
            else:
                text = _s(item)
                if text:
                    out.append(FieldError(field=list_name, message=text))
    return out


def _message(status: int, body: Mapping[str, Any] | None, response: HttpResponse) -> str:
    if body:
        for name in _MESSAGE_FIELDS:
            text = _s(body.get(name))
            if text:
                code = None
                for cname in _CODE_FIELDS:
                    code = _s(body.get(cname), 100)
                    if code:
                        break
                if code and code != text:
                    return f"{code}: {text}"
                return text
    seed = SEED_MESSAGES.get(status)
    if seed:
        return seed
    ctype = (response.header("Content-Type") or "").lower()
    if response.body and ("text/plain" in ctype or "json" in ctype):
        text = _s(response.text(300))
        if text:
            return text
    return f"HTTP {status}"


def _transport(error: TransportError) -> Outcome:
    kind = _s(getattr(error, "kind", None), 50) or "other"
    message = _s(getattr(error, "message", None)) or kind
    if getattr(error, "sent", True):
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            message=f"no response after the request was sent ({kind}): {message}",
            rule="siesmart:transport-sent",
        )
    return Outcome(
        kind=OutcomeKind.RETRY,
        message=f"request not sent ({kind}): {message}",
        rule="siesmart:transport-not-sent",
    )


def classify(
    response: HttpResponse | None,
    error: TransportError | None = None,
    *,
    kind: str | None = None,
    now: float | None = None,
    trace_header: str = TRACE_HEADER,
) -> Outcome:
    """Classify one SieSmart answer. *kind* is the document kind (``proposal`` = create).

    Never raises: anything unexpected becomes an outcome that says so.
    """
    try:
        return _classify(response, error, kind=kind, now=now, trace_header=trace_header)
    except Exception as exc:  # noqa: BLE001 - the contract: a classifier never raises
        status = getattr(response, "status", None)
        return Outcome(
            kind=OutcomeKind.UNKNOWN
            if status is not None and 200 <= status < 300
            else OutcomeKind.RETRY,
            status=status if isinstance(status, int) else None,
            message=f"unreadable response ({type(exc).__name__})",
            rule="siesmart:unreadable",
        )


def _classify(
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    kind: str | None,
    now: float | None,
    trace_header: str,
) -> Outcome:
    if response is None:
        if error is None:
            return Outcome(
                kind=OutcomeKind.RETRY, message="neither response nor error", rule="siesmart:none"
            )
        return _transport(error)

    status = response.status
    body = error_object(response)
    trace = trace_id_from(response, body, trace_header)

    def out(k: OutcomeKind, rule: str, **kw: Any) -> Outcome:
        kw.setdefault("message", _message(status, body, response))
        return Outcome(kind=k, status=status, trace_id=trace, rule=rule, **kw)

    if 200 <= status < 300:
        ref = proposal_id_from(body)
        decision = body.get("decision") if body else None
        pstatus = _s(decision.get("decisionStatus"), 100) if isinstance(decision, dict) else None
        if kind == "proposal":
            if ref is None:
                return out(
                    OutcomeKind.UNKNOWN,
                    "siesmart:200-create-without-id",
                    message="proposal created but the answer carries no proposal id "
                    "(look it up by label)",
                )
            return out(
                OutcomeKind.DELIVERED,
                "siesmart:200-created",
                message="The request has been successful",
                provider_ref=ref,
            )
        if kind == "decision":
            return out(
                OutcomeKind.DELIVERED,
                "siesmart:200-decision",
                message="The request has been successful",
                provider_ref=ref,
                provider_status=pstatus,
            )
        return out(
            OutcomeKind.DELIVERED,
            "siesmart:200",
            message="The request has been successful",
            provider_ref=ref,
        )

    if status == 401:
        return out(OutcomeKind.REAUTH, "siesmart:401")
    if status == 403:
        return out(OutcomeKind.CONFIG_ERROR, "siesmart:403")
    if status == 412:
        if kind == "proposal":
            return out(OutcomeKind.CONFIG_ERROR, "siesmart:412-on-create")
        return out(OutcomeKind.STALE, "siesmart:412")
    if status == 429:
        wait = retry_after_seconds(
            response.header("Retry-After"), time.time() if now is None else now
        )
        return out(OutcomeKind.THROTTLED, "siesmart:429", wait=wait)
    if status in (500, 503):
        wait = retry_after_seconds(
            response.header("Retry-After"), time.time() if now is None else now
        )
        return out(OutcomeKind.RETRY, f"siesmart:{status}", wait=wait)
    if status == 404:
        if body and any(k in body for k in ("code", "message", *_TRACE_FIELDS)):
            return out(
                OutcomeKind.REJECTED, "siesmart:404-not-found", field_errors=_field_errors(body)
            )
        return out(OutcomeKind.CONFIG_ERROR, "siesmart:404-no-endpoint")
    if status in (405, 406) or 300 <= status < 400 or status < 200:
        return out(OutcomeKind.CONFIG_ERROR, f"siesmart:{status}")
    if 400 <= status < 500:
        return out(
            OutcomeKind.REJECTED,
            f"siesmart:{status}",
            field_errors=_field_errors(body) if body else (),
        )
    # 502, 504 and the rest of 5xx: the provider's trouble, try again later.
    wait = retry_after_seconds(response.header("Retry-After"), time.time() if now is None else now)
    return out(OutcomeKind.RETRY, "siesmart:5xx", wait=wait)
