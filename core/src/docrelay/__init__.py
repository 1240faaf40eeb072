"""docrelay: deliver business documents to B2B provider APIs, exactly once.

The public API. Provider plugins use :data:`hookimpl`, the value objects and
:class:`Context` (and :mod:`docrelay.helpers` in classifiers); ERP connectors use
:class:`Relay`.
"""

from __future__ import annotations

from . import helpers as helpers  # the public helpers module: docrelay.helpers
from ._config import Config, load_config
from ._context import Context, DocumentView, Token, TransportFailure
from ._engine import EngineSettings
from ._host import PluginHost, PluginStatus
from ._logging import configure_logging
from ._logging import install_quiet_logging as _install_quiet_logging
from ._models import (
    FINAL_STATES,
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
from ._relay import DocumentStatus, IngestResult, Relay, SettleResult
from ._store import Store, open_store
from .exceptions import (
    ConfigError,
    DocrelayError,
    DocumentError,
    NotFoundError,
    OutcomeError,
    StoreError,
)
from .hookspecs import hookimpl

# Not an export: the docrelay logger and the engine's stamina retries stay silent until the
# application configures logging (docs/api.md, "Logging").
_install_quiet_logging()

# Plain sorted() order (tests/test_packaging.py), not isort's constants-first order.
__all__ = [  # noqa: RUF022
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
    "DocumentView",  # the former name of DocumentStatus (plugins written before)
    "EngineSettings",
    "FINAL_STATES",
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
    "PluginStatus",
    "ProviderInfo",
    "RateLimit",
    "Relay",
    "Setting",
    "SettleResult",
    "Store",
    "StoreError",
    "Token",
    "TransportError",
    "TransportFailure",
    "WebhookRefused",
    "WebhookSettings",
    "configure_logging",
    "hookimpl",
    "load_config",
    "open_store",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("docrelay")

    raise AttributeError(f"module {__name__} has no attribute {name!r}")
