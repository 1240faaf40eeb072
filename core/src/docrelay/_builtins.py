"""Built-in hook implementations: the generic HTTP classifier and the default key.

Registered as the essential plugin ``docrelay.builtins``, which cannot be blocked. Every
implementation here is ``trylast``: a provider plugin's answer always comes first.
"""

from __future__ import annotations

import os
import ssl
import time
import uuid
import warnings
from typing import Any

from ._context import Context
from ._models import Document, HttpResponse, Outcome, OutcomeKind, TransportError
from ._models import retry_after_seconds as _retry_after
from ._redact import redact
from .exceptions import ConfigError, DocrelayWarning
from .hookspecs import hookimpl

__all__ = [
    "DOCRELAY_TRANSPORT_FAULTS",
    "KEY_NAMESPACE",
    "check_verify",
    "classify_generic",
    "default_key",
]

#: Namespace of the default idempotency keys (uuid5).
KEY_NAMESPACE = uuid.UUID("6f1c3f52-52f4-4d55-9a52-3c0a2c3e9d11")


def default_key(document: Document) -> str:
    """A UUID derived from provider, document id and revision: the same for every retry and
    restart of one revision, new for a corrected revision."""
    return str(uuid.uuid5(KEY_NAMESPACE, f"{document.provider}:{document.id}:{document.revision}"))


#: Transport errors that are docrelay's to classify (configuration, not the provider): a
#: certificate that did not verify or a failed TLS handshake (``tls``), a URL docrelay
#: refused (``invalid_url``), a request requests refused to build (``invalid_request``: a
#: header value with a line break from a setting or a token), a header value docrelay
#: refused before sending (``invalid_header``). None of them was sent.
DOCRELAY_TRANSPORT_FAULTS = frozenset({"tls", "invalid_url", "invalid_request", "invalid_header"})


def check_verify(provider: str, value: Any) -> bool | str:
    """The ``verify`` setting of *provider*, checked when the configuration is read.

    ``true`` (the default): certificates are verified against the system's CAs. A path: a
    PEM CA bundle that must exist and load (a private CA). ``false``: no verification, with
    a :class:`~docrelay.DocrelayWarning` each time a provider is configured so. Anything
    else is a :class:`~docrelay.exceptions.ConfigError` naming the setting.
    """
    if value is None or value is True:
        return True
    if value is False:
        warnings.warn(
            DocrelayWarning(
                f"provider {provider}: verify = false turns TLS certificate verification off: "
                "anyone on the network path can read what docrelay sends (credentials "
                "included) and answer in the provider's name; set verify to the provider's CA "
                "bundle (a PEM file) instead"
            ),
            stacklevel=4,
        )
        return False
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"provider {provider}: verify must be true, false or the path of a PEM CA bundle, "
            f"not {value!r}"
        )
    if not os.path.exists(value):
        raise ConfigError(
            f"provider {provider}: verify = {value!r}: no such file (give the path of a PEM CA "
            "bundle, or true / false without quotes)"
        )
    try:
        if os.path.isdir(value):
            ssl.create_default_context(capath=value)
        else:
            ssl.create_default_context(cafile=value)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"provider {provider}: verify = {value!r} is not a usable PEM CA bundle ({exc})"
        ) from None
    return value


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
    wait = _retry_after(response.header("Retry-After"), time.time())
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


@hookimpl(trylast=True)
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome:
    return classify_generic(response, error)


@hookimpl(trylast=True)
def idempotency_key(document: Document, ctx: Context) -> str:
    return default_key(document)
