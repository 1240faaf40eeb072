"""AQI's own answers to a send, turned into docrelay outcomes (a pure function).

What AQI documents (seed 004, "Direct Integration - Validations and Error Handling"), in its
error shape ``{type, title, code, description}``:

======  =====================================================  ==================================
status  meaning (AQI's words)                                  outcome
======  =====================================================  ==================================
200     received, not yet fully validated;                     ``accepted`` (the EDIErrorSent
        ``{"internalRequestId": "<uuid>"}``                    webhook gives the final answer)
400     data incomplete or incorrect (layer 1)                 ``rejected`` with the description
                                                               (``Path:`` becomes a field error)
404     no such business or customer (AQI's words kept)        ``config_error``
500     AQI unavailable, *or* the API key is wrong/expired     ``config_error`` when the body
                                                               names the key (``bad_key_markers``)
                                                               else ``retry``
======  =====================================================  ==================================

Everything else is docrelay's generic classification (``None`` here): the API gateway's
401/403 (``config_error``: the key is a setting), 429 (``throttled``), 413 and other 4xx
(``rejected``), 502/503/504 (``retry``), transport errors, and the ``Retry-After`` wait and
the ``X-Request-ID`` of every outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind
from docrelay.helpers import body_text, scalar_text

__all__ = ["DEFAULT_BAD_KEY_MARKERS", "NAME", "classify", "parse_description"]

#: The provider id: the entry point's name, ``Document.provider``, ``[providers.aqi]``.
NAME = "aqi"

#: Words in a 500 body that mean "your subscription key is wrong or expired".
DEFAULT_BAD_KEY_MARKERS: tuple[str, ...] = ("subscription key", "access denied")

_PATH_RE = re.compile(
    r"Path:\s*(?P<path>\S+)\s+Message:\s*(?P<message>.*?)"
    r"(?:\s+Line:\s*\d+,\s*Position:\s*\d+)?"
    r"(?:\s+SchemaId:\s*(?P<schema>\S+))?\s*$",
    re.DOTALL,
)
_MAX_MESSAGE = 2000


def parse_description(description: str) -> tuple[FieldError, ...]:
    """The field error inside a layer-1 description (``... Path:billToAddress.email Message:
    ... SchemaId: #/...``), or nothing when the description names no path."""
    m = _PATH_RE.search(description)
    if not m:
        return ()
    message = m["message"].strip() or description
    return (FieldError(field=m["path"], message=message, rule=m["schema"]),)


def _message(problem: dict[str, Any], response: HttpResponse) -> str | None:
    """``title: description`` of AQI's shape, else the gateway's ``message``, else the body."""
    title = scalar_text(problem.get("title"))
    description = scalar_text(problem.get("description"))
    if title and description:
        return f"{title}: {description}"[:_MAX_MESSAGE]
    plain = scalar_text(problem.get("message")) or scalar_text(problem.get("Message"))
    text = description or title or plain
    return text[:_MAX_MESSAGE] if text else body_text(response, _MAX_MESSAGE)


def _names_bad_key(response: HttpResponse, markers: Iterable[str]) -> bool:
    body = response.body.decode("utf-8", errors="replace").lower()
    return any(m and m.lower() in body for m in markers)


def classify(
    response: HttpResponse, *, bad_key_markers: Iterable[str] = DEFAULT_BAD_KEY_MARKERS
) -> Outcome | None:
    """The outcome of one AQI answer; ``None`` leaves it to the generic classification."""
    raw = response.json()
    problem: dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = _message(problem, response)
    status = response.status
    if 200 <= status < 300:
        ref = scalar_text(problem.get("internalRequestId"))
        return Outcome(
            kind=OutcomeKind.ACCEPTED,
            message="received by AQI, waiting for the EDIErrorSent notification"
            + ("" if ref else " (the answer carried no internalRequestId)"),
            provider_ref=ref,
            rule="aqi:200-received",
        )
    if status == 400:
        return Outcome(
            kind=OutcomeKind.REJECTED,
            message=message or "400 Bad Request",
            field_errors=parse_description(scalar_text(problem.get("description")) or ""),
            provider_status=scalar_text(problem.get("title")),
            rule="aqi:400-layer1",
        )
    if status == 404:
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=message or "404: no such endpoint, business or customer",
            rule="aqi:404-not-found",
        )
    if status == 500 and _names_bad_key(response, bad_key_markers):
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            message=message or "500: the subscription key is wrong or expired",
            rule="aqi:500-bad-key",
        )
    if status == 500:
        return Outcome(
            kind=OutcomeKind.RETRY, message=message or "500: AQI unavailable",
            rule="aqi:500-unavailable",
        )  # fmt: skip
    return None
