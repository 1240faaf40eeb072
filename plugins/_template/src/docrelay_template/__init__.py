"""docrelay-template: a minimal, complete provider plugin to copy.

The ``template`` provider takes a document with ``POST /v1/documents``, authenticates with an
API key (``X-Api-Key``) and deduplicates on an ``Idempotency-Key`` header: a resend of the
same document revision after a lost answer is answered ``409`` instead of being processed
twice. :mod:`docrelay_template.sandbox` imitates it on 127.0.0.1.

Every hook is a module-level function marked with ``@docrelay.hookimpl``; the entry point
``template = "docrelay_template"`` (group ``docrelay.plugins``) registers this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import docrelay
from docrelay import (
    Context,
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    RateLimit,
    Setting,
    TransportError,
)

from ._classify import classify
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

#: The provider id: the entry point's name, ``Document.provider`` and ``[providers.template]``.
NAME = "template"

#: Where ``docrelay sandbox template`` listens by default.
SANDBOX_URL = "http://127.0.0.1:8799"


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    """Declare the provider: environments, limits, capabilities and settings."""
    return ProviderInfo(
        name=NAME,
        title="Template provider (copy me)",
        environments={
            "sandbox": SANDBOX_URL,
            # Replace with the provider's real base URLs (".example" never resolves).
            "production": "https://api.template-provider.example",
        },
        default_environment="sandbox",
        auth="api_key",
        kinds=("document",),
        max_payload_bytes=1_000_000,
        rate_limit=RateLimit(requests=600, per_seconds=60),
        # The provider deduplicates on the key docrelay sends (the Idempotency-Key header).
        idempotency="key",
        async_validation="none",
        settings=(
            Setting(
                name="api_key",
                help="the API key from the provider's portal, as a ${ENV_VAR} reference",
                secret=True,
                required=True,
            ),
        ),
        # Rate limits and tokens are kept per credential. Name a setting that identifies the
        # account without being a secret (a client id) when the provider has one.
        credential_setting=None,
    )


@docrelay.hookimpl
def provider_sandbox() -> type[TemplateSandbox]:
    """The sandbox that ``docrelay sandbox template``, the demo and the tests start."""
    return TemplateSandbox


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """``POST /v1/documents`` with the payload as it is."""
    return HttpRequest(
        method="POST",
        url="/v1/documents",
        body=document.payload,
        headers={"Content-Type": document.content_type, "Accept": "application/json"},
    )


@docrelay.hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str]:
    """The API key (registered as a secret) and the idempotency key of this revision."""
    api_key = ctx.setting("api_key")
    if not api_key:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                message="the template provider needs the api_key setting",
                rule=f"{NAME}:no-api-key",
            )
        )
    headers = {"X-Api-Key": ctx.secret(str(api_key))}
    if ctx.key is not None:
        headers["Idempotency-Key"] = ctx.key
    return headers


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    """The provider's answers (see :mod:`docrelay_template._classify` for the table)."""
    return classify(response, error)
