"""The core's generic HTTP classification, and the one place a provider's classifier is called.

A provider's ``classify_response`` answers what is specific to its provider and returns
``None`` for the rest; :func:`classify_generic` then decides from the status alone. Either
way :func:`complete` fills in what the outcome leaves empty and the response tells: the status,
the ``Retry-After`` wait (seconds or an HTTP date, capped at :data:`MAX_RETRY_AFTER`) and the
request id from the header the provider declares (``ProviderInfo.request_id_header``). A
classifier that raises or answers something else than an :class:`Outcome` is logged and
replaced by the generic answer: the classifier never decides by raising.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._models import HttpResponse, Outcome, OutcomeKind, ProviderInfo, TransportError
from ._models import retry_after_seconds as _retry_after_seconds
from ._redact import redact

__all__ = [
    "DOCRELAY_TRANSPORT_FAULTS",
    "MAX_RETRY_AFTER",
    "classify",
    "classify_generic",
    "complete",
    "retry_after",
]

log = logging.getLogger("docrelay.engine")

#: The longest ``Retry-After`` docrelay believes (a day): a date far ahead is a clock or a
#: provider bug, not a reason to park a document for a year.
MAX_RETRY_AFTER = 86400.0

#: Kinds whose outcome takes the response's ``Retry-After`` when the classifier gave none.
_WAITING = frozenset({OutcomeKind.RETRY, OutcomeKind.THROTTLED})


def retry_after(response: HttpResponse | None, now: float | None = None) -> float | None:
    """The response's ``Retry-After`` in seconds (capped), ``None`` when absent or invalid."""
    if response is None:
        return None
    wait = _retry_after_seconds(response.header("Retry-After"), time.time() if now is None else now)
    return None if wait is None else min(wait, MAX_RETRY_AFTER)


#: Transport errors that are docrelay's to classify (configuration, not the provider): a
#: certificate that did not verify or a failed TLS handshake (``tls``), a URL docrelay
#: refused (``invalid_url``), a request requests refused to build (``invalid_request``: a
#: header value with a line break from a setting or a token), a header value docrelay
#: refused before sending (``invalid_header``). None of them was sent.
DOCRELAY_TRANSPORT_FAULTS = frozenset({"tls", "invalid_url", "invalid_request", "invalid_header"})


def _message(response: HttpResponse) -> str | None:
    data = response.json()
    if isinstance(data, dict):
        for k in ("message", "Message", "error_description", "error", "title", "detail"):
            v = data.get(k)
            if isinstance(v, str) and v:
                return redact(v)[:500]  # redacted before the cut: no half secret survives
    text = redact(response.text(2000)).strip()[:300]
    if text and not text.startswith("<"):
        return text
    return None


def classify_generic(response: HttpResponse | None, error: TransportError | None) -> Outcome:
    """What any HTTP API's answer means when the provider's classifier has no opinion."""
    if response is None:
        if error is None:
            return Outcome(kind=OutcomeKind.UNKNOWN, message="no response", rule="generic:none")
        if error.kind in DOCRELAY_TRANSPORT_FAULTS:
            return Outcome(
                kind=OutcomeKind.CONFIG_ERROR, message=error.message, rule=f"generic:{error.kind}"
            )
        if error.sent:
            return Outcome(
                kind=OutcomeKind.UNKNOWN, message=error.message, rule=f"generic:{error.kind}"
            )
        return Outcome(kind=OutcomeKind.RETRY, message=error.message, rule=f"generic:{error.kind}")
    status = response.status
    message = _message(response)
    wait = retry_after(response)
    if 200 <= status < 300:
        return Outcome(kind=OutcomeKind.DELIVERED, status=status, rule="generic:2xx")
    if 300 <= status < 400:
        # docrelay never follows a redirect (it could lead off the configured host, and a
        # POST would be replayed): the provider did not take the document at this URL.
        location = (response.header("Location") or "?")[:300]
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            status=status,
            message=f"unexpected redirect to {location}: check the base URL",
            rule="generic:3xx",
        )
    if status == 401:
        return Outcome(kind=OutcomeKind.REAUTH, status=status, message=message, rule="generic:401")
    if status in (403, 404, 405, 406, 407, 415):
        return Outcome(
            kind=OutcomeKind.CONFIG_ERROR, status=status, message=message, rule=f"generic:{status}"
        )
    if status == 408:
        return Outcome(kind=OutcomeKind.RETRY, status=status, message=message, rule="generic:408")
    if status == 412:
        return Outcome(kind=OutcomeKind.STALE, status=status, message=message, rule="generic:412")
    if status == 429:
        return Outcome(
            kind=OutcomeKind.THROTTLED,
            status=status,
            message=message,
            wait=wait,
            rule="generic:429",
        )
    if 400 <= status < 500:
        return Outcome(
            kind=OutcomeKind.REJECTED, status=status, message=message, rule="generic:4xx"
        )
    if status >= 500:
        return Outcome(
            kind=OutcomeKind.RETRY, status=status, message=message, wait=wait, rule="generic:5xx"
        )
    return Outcome(
        kind=OutcomeKind.UNKNOWN, status=status, message=message, rule="generic:unexpected"
    )


def complete(
    outcome: Outcome, response: HttpResponse | None, info: ProviderInfo | None = None
) -> Outcome:
    """*outcome* with the status, the wait and the request id the response tells, where the
    classifier left them empty."""
    if response is None:
        return outcome
    changes: dict[str, Any] = {}
    if outcome.status is None:
        changes["status"] = response.status
    wait = retry_after(response) if outcome.kind in _WAITING else None
    if outcome.wait is None and wait is not None:
        changes["wait"] = wait
    header = info.request_id_header if info is not None else None
    if outcome.request_id is None and header and (rid := response.header(header)):
        changes["request_id"] = rid.strip()[:200] or None
    return attrs.evolve(outcome, **changes) if changes else outcome


def classify(
    call: Callable[[], object],
    response: HttpResponse | None,
    error: TransportError | None,
    info: ProviderInfo | None = None,
) -> Outcome:
    """Call a provider's classifier (*call*), fall back to :func:`classify_generic`, and
    :func:`complete` the outcome. Never raises."""
    name = info.name if info is not None else "?"
    if error is not None and error.kind in DOCRELAY_TRANSPORT_FAULTS:
        return classify_generic(None, error)
    try:
        result = call()
    except Exception as exc:
        log.exception("classifier of %s raised", name)
        result = classify_generic(response, error)
        result = attrs.evolve(
            result,
            message=f"{result.message or ''} (provider classifier failed: "
            f"{type(exc).__name__})".strip(),
            rule="generic:classifier-error",
        )
    if not isinstance(result, Outcome):
        result = classify_generic(response, error)
    if result.rule == "generic:401" and _static_credentials(info):
        # Nothing to refresh: a key from a setting that is refused stays refused.
        result = attrs.evolve(result, kind=OutcomeKind.CONFIG_ERROR, rule="generic:401-key")
    return complete(result, response, info)


def _static_credentials(info: ProviderInfo | None) -> bool:
    """Whether *info* declares only credentials from settings (no token to fetch anew)."""
    from ._auth import schemes
    from .auth import OAuth2ClientCredentials

    declared = schemes(info.auth) if info is not None else ()
    return bool(declared) and not any(isinstance(s, OAuth2ClientCredentials) for s in declared)
