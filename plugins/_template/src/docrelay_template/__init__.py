"""The ``template`` provider: ``POST /v1/documents`` with an API key, deduplicated on an
``Idempotency-Key`` header (a resend is answered ``409``). The entry point registers this
module: every function marked ``@docrelay.hookimpl`` is a hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import docrelay
from docrelay import (
    Context,
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    ProviderInfo,
    RateLimit,
    Setting,
    TransportError,
)
from docrelay.auth import ApiKeyHeader

from ._classify import NAME, classify

if TYPE_CHECKING:
    from .sandbox import TemplateSandbox

__all__ = ["NAME", "TemplateSandbox", "build_request", "classify_response", "provider_info"]


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    """The provider: environments, auth, limits, capabilities and settings."""
    return ProviderInfo(
        name=NAME,
        hook_api=2,  # the docrelay hook API this plugin is written for
        # Put the provider's real base URLs here (".example" never resolves).
        environments={
            "sandbox": "http://127.0.0.1:8799",
            "production": "https://api.template-provider.example",
        },
        default_environment="sandbox",
        # The core adds the header to every send and redacts the key everywhere.
        auth=ApiKeyHeader("X-Api-Key", setting="api_key"),
        idempotency="key",  # the provider deduplicates on the key we send ...
        idempotency_header="Idempotency-Key",  # ... in this header (set by the core)
        request_id_header="X-Request-Id",  # kept in every outcome, shown by `docrelay why`
        max_payload_bytes=1_000_000,
        rate_limit=RateLimit(requests=600, per_seconds=60),
        settings=(
            Setting(
                name="api_key",
                help="the API key, as a ${ENV_VAR} reference",
                secret=True,
                required=True,
            ),
        ),
        # for `docrelay sandbox`, the demo and the contract kit; imported only there
        sandbox="docrelay_template.sandbox:TemplateSandbox",
    )


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """``POST /v1/documents`` with the payload as it is."""
    headers = {"Content-Type": document.content_type, "Accept": "application/json"}
    return HttpRequest(method="POST", url="/v1/documents", body=document.payload, headers=headers)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    """The provider's own answers (the table is in :mod:`._classify`); ``None`` leaves the
    rest (401, 403, 429, 5xx, transport errors) to docrelay's generic classification."""
    return classify(response) if response is not None else None


#: Imported at first use, not when the plugin is loaded to send (the sandbox, and what it
#: pulls in, is needed only by ``docrelay sandbox``, ``docrelay demo`` and the contract kit).
_LAZY = {"TemplateSandbox": ".sandbox"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
