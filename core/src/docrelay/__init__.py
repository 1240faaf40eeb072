"""docrelay: deliver business documents to B2B provider APIs, exactly once.

The public API. Provider plugins use :data:`hookimpl`, the value objects and
:class:`Context`; ERP connectors use :class:`Relay`.
"""

from __future__ import annotations

from ._config import Config, load_config
from ._context import Context, DocumentView, Token, TransportFailure
from ._engine import EngineSettings
from ._host import PluginHost, PluginStatus
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
from ._notify import WebhookRefused, WebhookSettings
from ._relay import DocumentStatus, IngestResult, Relay
from ._store import Record, Store, open_store
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
    "Config",
    "ConfigError",
    "Context",
    "DemoBatch",
    "DocState",
    "DocrelayError",
    "Document",
    "DocumentError",
    "DocumentStatus",
    "DocumentView",
    "EngineSettings",
    "FieldError",
    "HttpRequest",
    "HttpResponse",
    "IngestResult",
    "NotFoundError",
    "Notification",
    "Outcome",
    "OutcomeError",
    "OutcomeKind",
    "PluginHost",
    "PluginLoadError",
    "PluginStatus",
    "ProviderInfo",
    "RateLimit",
    "Record",
    "Relay",
    "Setting",
    "Store",
    "StoreError",
    "Token",
    "TransportError",
    "TransportFailure",
    "WebhookRefused",
    "WebhookSettings",
    "hookimpl",
    "load_config",
    "open_store",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("docrelay")

    raise AttributeError(f"module {__name__} has no attribute {name!r}")
