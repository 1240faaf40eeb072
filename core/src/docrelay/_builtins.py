"""Built-in hook implementations: the generic HTTP classifier (:mod:`._classify`) and the
default key.

Registered as the essential plugin ``docrelay.builtins``, which cannot be blocked. Every
implementation here is ``trylast``: a provider plugin's answer always comes first.
"""

from __future__ import annotations

import os
import ssl
import uuid
import warnings
from typing import Any

from ._classify import DOCRELAY_TRANSPORT_FAULTS, classify_generic
from ._context import Context
from ._models import Document, HttpResponse, Outcome, TransportError
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


@hookimpl(trylast=True)
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome:
    return classify_generic(response, error)


@hookimpl(trylast=True)
def idempotency_key(document: Document, ctx: Context) -> str:
    return default_key(document)
