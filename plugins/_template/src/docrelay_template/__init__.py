"""The ``template`` provider: ``POST /v1/documents`` with an API key, deduplicated on an
``Idempotency-Key`` header (a resend is answered ``409``). The entry point registers this
module: every function marked ``@docrelay.hookimpl`` is a hook."""

from __future__ import annotations

from collections.abc import Mapping

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

from ._classify import NAME, classify
from .sandbox import TemplateSandbox

__all__ = [
    "NAME",
    "TemplateSandbox",
    "build_request",
    "classify_response",
    "prepare_headers",
    "provider_info",
    "provider_sandbox",
]


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    """The provider: environments, limits, capabilities and settings."""
    return ProviderInfo(
        name=NAME,
        title="Template provider",
        # Put the provider's real base URLs here (".example" never resolves).
        environments={
            "sandbox": "http://127.0.0.1:8799",
            "production": "https://api.template-provider.example",
        },
        default_environment="sandbox",
        auth="api_key",
        max_payload_bytes=1_000_000,
        rate_limit=RateLimit(requests=600, per_seconds=60),
        idempotency="key",  # the provider deduplicates on the Idempotency-Key we send
        settings=(
            Setting(
                name="api_key",
                help="the API key, as a ${ENV_VAR} reference",
                secret=True,
                required=True,
            ),
        ),
    )


@docrelay.hookimpl
def provider_sandbox() -> type[TemplateSandbox]:
    """The sandbox that ``docrelay sandbox``, the demo and the contract kit start."""
    return TemplateSandbox


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """``POST /v1/documents`` with the payload as it is."""
    headers = {"Content-Type": document.content_type, "Accept": "application/json"}
    return HttpRequest(method="POST", url="/v1/documents", body=document.payload, headers=headers)


@docrelay.hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str]:
    """The API key (registered as a secret: redacted everywhere) and this revision's key."""
    # api_key is a required setting: docrelay refuses a configuration without it.
    headers = {"X-Api-Key": ctx.secret(str(ctx.setting("api_key")))}
    if ctx.key is not None:
        headers["Idempotency-Key"] = ctx.key
    return headers


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    """The provider's answers (the table is in :mod:`._classify`)."""
    return classify(response, error)
