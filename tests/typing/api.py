"""Type-checked by mypy (``nox -s typecheck``), never run: the public API as an ERP connector
and a plugin author use it. A change that breaks these lines breaks users' type checks."""

from __future__ import annotations

from collections.abc import Mapping

import docrelay
from docrelay import (
    Context,
    Document,
    FieldError,
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
from docrelay.sandbox import Route, Sandbox, SandboxRequest, SandboxResponse

# -- an ERP connector builds documents ---------------------------------------------------------

invoice = Document(
    id="INV-2024-0001",
    provider="template",
    payload=b'{"number": "INV-2024-0001"}',
    kind="invoice",
    content_type="application/json",
    metadata={"erp_id": "4711"},
)
revision: str = invoice.revision
text: str = invoice.text()
version: str = docrelay.__version__

# -- a plugin author declares a provider and classifies its answers ----------------------------


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name="typing",
        title="Typing provider",
        environments={"sandbox": "http://127.0.0.1:8000"},
        default_environment="sandbox",
        rate_limit=RateLimit(requests=100, per_seconds=60),
        settings=(Setting(name="api_key", secret=True, required=True),),
    )


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    return HttpRequest(method="POST", url=ctx.url("/documents"), body=document.payload)


@docrelay.hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str]:
    key: str | None = ctx.key
    return {"Idempotency-Key": key or "", "X-Api-Key": ctx.secret(str(ctx.setting("api_key")))}


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    if error is not None:
        return Outcome(kind=OutcomeKind.UNKNOWN if error.sent else OutcomeKind.RETRY)
    if response is None or response.status >= 500:
        return None
    if response.status == 401:
        raise OutcomeError(Outcome(kind=OutcomeKind.CONFIG_ERROR, status=401))
    outcome = Outcome(
        kind="rejected",
        status=response.status,
        field_errors=(FieldError(field="number", message="required"),),
    )
    success: bool = outcome.is_success
    line: str = outcome.describe()
    return outcome if not success and line else None


# -- and imitates it in a sandbox ---------------------------------------------------------------


class TypingSandbox(Sandbox):
    name = "typing"

    def routes(self) -> list[Route]:
        import re

        return [Route("POST", re.compile(r"^/documents$"), self._post)]

    def _post(self, request: SandboxRequest) -> SandboxResponse:
        self.record_effect("document", request.header("Idempotency-Key") or "")
        return SandboxResponse.json(201, {"id": "1"})
