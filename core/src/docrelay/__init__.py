"""docrelay: deliver business documents to B2B provider APIs, exactly once.

The public API. Provider plugins use :data:`hookimpl`, the value objects and
:class:`Context`; ERP connectors use :class:`Relay`.
"""

from __future__ import annotations

from ._context import Context, DocumentView, Token, TransportFailure
from ._models import (
    Attempt,
    DemoBatch,
    DocState,
    Document,
    FieldError,
    HttpRequest,
    HttpResponse,
    Notification,
    Outcome,
    OutcomeKind,
    ProviderInfo,
    RateLimit,
    Setting,
    TransportError,
)
from .exceptions import (
    ConfigError,
    DocrelayError,
    DocumentError,
    NotFoundError,
    OutcomeError,
    PluginLoadError,
    StoreError,
)
from .hookspecs import hookimpl

__all__ = [
    "Attempt",
    "ConfigError",
    "Context",
    "DemoBatch",
    "DocState",
    "DocrelayError",
    "Document",
    "DocumentError",
    "DocumentView",
    "FieldError",
    "HttpRequest",
    "HttpResponse",
    "NotFoundError",
    "Notification",
    "Outcome",
    "OutcomeError",
    "OutcomeKind",
    "PluginLoadError",
    "ProviderInfo",
    "RateLimit",
    "Setting",
    "StoreError",
    "Token",
    "TransportError",
    "TransportFailure",
    "hookimpl",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("docrelay")

    raise AttributeError(f"module {__name__} has no attribute {name!r}")
