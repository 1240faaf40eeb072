"""Built-in hook implementations: the generic HTTP classifier and the default key.

Registered as the essential plugin ``docrelay.builtins``, which cannot be blocked. Every
implementation here is ``trylast``: a provider plugin's answer always comes first.
"""

from __future__ import annotations

import time
import uuid

from ._context import Context
from ._models import Document, HttpResponse, Outcome, OutcomeKind, TransportError
from ._models import retry_after_seconds as _retry_after
from .hookspecs import hookimpl

__all__ = ["DOCRELAY_TRANSPORT_FAULTS", "KEY_NAMESPACE", "classify_generic", "default_key"]

#: Namespace of the default idempotency keys (uuid5).
KEY_NAMESPACE = uuid.UUID("6f1c3f52-52f4-4d55-9a52-3c0a2c3e9d11")


def default_key(document: Document) -> str:
    """A UUID derived from provider, document id and revision: the same for every retry and
    restart of one revision, new for a corrected revision."""
    return str(uuid.uuid5(KEY_NAMESPACE, f"{document.provider}:{document.id}:{document.revision}"))


#: Transport errors that are docrelay's to classify (configuration, not the provider).
DOCRELAY_TRANSPORT_FAULTS = frozenset({"tls", "invalid_url", "invalid_header"})


def _message(response: HttpResponse) -> str | None:
    data = response.json()
    if isinstance(data, dict):
        for k in ("message", "Message", "error_description", "error", "title", "detail"):
            v = data.get(k)
            if isinstance(v, str) and v:
                return v[:500]
    text = response.text(300).strip()
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
    wait = _retry_after(response.header("Retry-After"), time.time())
    if 200 <= status < 300:
        return Outcome(kind=OutcomeKind.DELIVERED, status=status, rule="generic:2xx")
    if 300 <= status < 400:
        location = response.header("Location") or "?"
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


@hookimpl(trylast=True)
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome:
    return classify_generic(response, error)


@hookimpl(trylast=True)
def idempotency_key(document: Document, ctx: Context) -> str:
    return default_key(document)
