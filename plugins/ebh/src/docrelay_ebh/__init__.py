"""docrelay plugin for the eBillingHub (EBH) Validation API.

A document (eSF or UBF invoice XML) is POSTed as a *validation request*; eBillingHub answers
201 with the request's ``Id`` (``accepted``), and docrelay polls
``GET .../ValidationRequest/{Id}`` until the validation is done: 202 while running, 200 with
the ``ValidationResults`` when complete (``delivered``, or ``rejected`` with every result as a
field error). See README.md for settings and every assumption.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import docrelay
from docrelay import (
    Context,
    DemoBatch,
    Document,
    DocumentError,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    Setting,
    TransportError,
    TransportFailure,
)
from docrelay.auth import ApiKeyHeader

from . import _classify

if TYPE_CHECKING:
    from .sandbox import EbhSandbox as EbhSandbox

__all__ = [
    "INVOICE_TYPES",
    "NAME",
    "build_request",
    "classify_response",
    "demo_batch",
    "poll_path",
    "poll_status",
    "provider_info",
    "reconcile",
    "validation_path",
]

NAME = "ebh"
SANDBOX_URL = "http://127.0.0.1:8704"

#: Values of the ``InvoiceType`` header the Validation API accepts.
INVOICE_TYPES = ("ESF", "MultipleInvoiceUBF", "TimeEntryInvoice", "TimeEntryESF")
_URL_PREFIXES = {"new": "/ebh/validations", "old": "/validations/api"}
# Typed ``tuple[Any, ...]``: what ``Setting.choices`` takes under mypy strict.
_URL_STYLES: tuple[Any, ...] = tuple(_URL_PREFIXES)
_API_VERSIONS: tuple[Any, ...] = ("v1", "v2")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "producer_id",
        help="ProducerId header: the client on whose behalf requests are sent.",
        required=True,
    ),
    Setting(
        "provider_key",
        help="ProviderKey header: the access token issued by eBillingHub.",
        secret=True,
        required=True,
    ),
    Setting(
        "username", help="Username header (optional, for eBillingHub's reporting only).", type="str"
    ),
    Setting(
        "url_style",
        default="new",
        choices=_URL_STYLES,
        help='"new": {base}/ebh/validations/{v}/...; "old" (deprecated by eBillingHub): '
        "{base}/validations/api/{v}/...",
    ),
    Setting(
        "api_version",
        default="v2",
        choices=_API_VERSIONS,
        help='"v1" (eSF 2.0.2, TimeEntryESF 2.0.1) or "v2" (eSF 3.1.2, TimeEntryESF 3.1.1).',
    ),
    Setting(
        "invoice_type",
        default="MultipleInvoiceUBF",
        help="InvoiceType header when the document has no 'invoice_type' metadata: "
        + ", ".join(INVOICE_TYPES)
        + ".",
    ),
    Setting(
        "error_severities",
        default=_classify.DEFAULT_ERROR_SEVERITIES,
        help="Result severities that make a completed validation 'rejected' (assumption).",
    ),
    Setting(
        "pending_statuses",
        default=_classify.DEFAULT_PENDING_STATUSES,
        help="Status values of a validation that is still queued/running (assumption: 1, 2).",
    ),
    Setting(
        "failed_statuses",
        default=_classify.DEFAULT_FAILED_STATUSES,
        help="Status values meaning eBillingHub failed the validation itself; the document is "
        "sent again (assumption: 3).",
    ),
    Setting(
        "poll_interval",
        default=None,
        type="number",
        minimum=0,
        help="Seconds to suggest between polls (a Retry-After from eBillingHub wins); "
        "unset: the engine's own backoff.",
    ),
    Setting(
        "resend_after_unknown",
        default=True,
        help="After an ambiguous send (timeout after the body left), send again (true) or "
        "leave the document for an operator (false). eBillingHub has no lookup.",
    ),
)


def _choice(ctx: Context, name: str, allowed: tuple[Any, ...], rule: str, fold: bool = True) -> str:
    """A setting with a fixed set of values (*fold*: in any case), checked where it is used
    (url_style and api_version are also refused at load)."""
    spec = ctx.provider.setting(name)
    value = str(ctx.setting(name, spec.default if spec is not None else None)).strip()
    for candidate in allowed:
        if candidate == value or (fold and candidate.lower() == value.lower()):
            return str(candidate)
    message = f"setting {name} {value[:60]!r} is not one of " + ", ".join(allowed)
    raise OutcomeError(Outcome(kind=OutcomeKind.CONFIG_ERROR, message=message, rule=rule))


def validation_path(ctx: Context) -> str:
    """``{prefix}/{v}/ValidationRequest`` for the configured URL style and API version.

    Raises :class:`docrelay.OutcomeError` (``config_error``) for a value that is not allowed.
    """
    style = _choice(ctx, "url_style", _URL_STYLES, "ebh:setting-url-style")
    version = _choice(ctx, "api_version", _API_VERSIONS, "ebh:setting-api-version")
    return f"{_URL_PREFIXES[style]}/{version}/ValidationRequest"


def poll_path(ctx: Context, request_id: str) -> str:
    """The GET path of one validation request (same style and version as its POST)."""
    base = ctx.state.get("validation_path")
    if not isinstance(base, str) or not base.endswith("/ValidationRequest"):
        base = validation_path(ctx)
    return f"{base}/{request_id}"


def _poll_wait(ctx: Context) -> float | None:
    value = ctx.setting("poll_interval")
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def _poll_settings(ctx: Context) -> dict[str, Any]:
    """The poll classifier's settings (lists checked at load: items are str or int)."""

    def ints(name: str, default: tuple[int, ...]) -> list[int]:
        values = [str(v).strip() for v in ctx.setting(name, default)]
        return [int(v) for v in values if v.lstrip("-").isdigit()]

    return {
        "error_severities": [
            str(s).strip()
            for s in ctx.setting("error_severities", _classify.DEFAULT_ERROR_SEVERITIES)
        ],
        "pending_statuses": ints("pending_statuses", _classify.DEFAULT_PENDING_STATUSES),
        "failed_statuses": ints("failed_statuses", _classify.DEFAULT_FAILED_STATUSES),
        "poll_wait": _poll_wait(ctx),
    }


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name=NAME,
        hook_api=2,
        content_type="application/xml",
        environments={"sandbox": SANDBOX_URL},
        default_environment="sandbox",
        # ProducerId is sent but is no secret; Username is left out when unset.
        auth=(
            ApiKeyHeader("ProducerId", "producer_id"),
            ApiKeyHeader("ProviderKey", "provider_key"),
            ApiKeyHeader("Username", "username", optional=True),
        ),
        request_id_header="OperationId",
        kinds=("invoice", "document"),
        idempotency="none",  # every POST creates a new validation request
        async_validation="poll",
        settings=SETTINGS,
        credential_setting="producer_id",
        sandbox="docrelay_ebh.sandbox:EbhSandbox",
        demo="docrelay_ebh:demo_batch",
    )


def _invoice_type(document: Document, ctx: Context) -> str:
    """The ``InvoiceType`` header: the document's metadata, else the setting."""
    invoice_type = document.metadata.get("invoice_type")
    if invoice_type is None:
        return _choice(ctx, "invoice_type", INVOICE_TYPES, "ebh:setting-invoice-type", fold=False)
    if invoice_type not in INVOICE_TYPES:
        raise DocumentError(
            f"metadata invoice_type {invoice_type[:60]!r} is not one of " + ", ".join(INVOICE_TYPES)
        )
    return invoice_type


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    invoice_type = _invoice_type(document, ctx)
    head = document.payload[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        raise DocumentError("the eBillingHub Validation API takes XML; the payload is not XML")
    path = validation_path(ctx)
    # A new send creates a new validation request: forget the previous one (kept for audit).
    old = ctx.state.pop("validation_id", None)
    previous = ctx.state.setdefault("previous_validation_ids", []) if old else None
    if isinstance(previous, list) and old not in previous:
        previous.append(old)
    for stale in ("validated_invoice_url", "validation_status"):
        ctx.state.pop(stale, None)
    ctx.state.update(validation_path=path, invoice_type=invoice_type)
    headers = {
        "Content-Type": "application/xml",
        "InvoiceType": invoice_type,
        "Accept": "application/json",
    }
    return HttpRequest(method="POST", url=path, body=document.payload, headers=headers)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    """The POST's own answers (:func:`._classify.classify_send`); the rest is generic."""
    if response is None:
        return None
    outcome = _classify.classify_send(response, ctx.base_url, _poll_wait(ctx))
    if outcome is not None and outcome.kind == OutcomeKind.ACCEPTED:
        ctx.state["validation_id"] = outcome.provider_ref
        if operation_id := (response.header("OperationId") or "").strip()[:200]:
            ctx.state["operation_id"] = operation_id
    return outcome


@docrelay.hookimpl
def poll_status(document: Document, ctx: Context) -> Outcome:
    request_id = ctx.state.get("validation_id")
    if not _classify.is_valid_id(request_id):
        return Outcome(
            kind=OutcomeKind.RETRY,
            resend=True,
            message="no validation request id is known for this document; sending it again",
            rule="ebh:poll-no-id",
        )
    path = poll_path(ctx, str(request_id))
    try:
        response = ctx.request("GET", path, headers={"Accept": "application/json"}, auth=True)
    except TransportFailure as exc:
        return _classify.poll_transport(exc.error)
    outcome = _classify.classify_poll(response, **_poll_settings(ctx))
    if outcome.provider_status is not None:
        ctx.state["validation_status"] = outcome.provider_status
    if outcome.kind == OutcomeKind.DELIVERED:
        url = _classify.validated_invoice_url(response.json(), ctx.base_url)
        if url:
            ctx.state["validated_invoice_url"] = url
    return outcome


@docrelay.hookimpl
def reconcile(document: Document, ctx: Context) -> Outcome | None:
    if not ctx.setting("resend_after_unknown", True):
        return None
    return Outcome(
        kind=OutcomeKind.RETRY,
        message="eBillingHub has no lookup for validation requests; a validation request has "
        "no effect beyond the validation, so the document is sent again",
        rule="ebh:reconcile-resend",
    )


def _sample(name: str) -> bytes:
    return resources.files(__name__).joinpath("samples", name).read_bytes()


def _invoice(doc_id: str, sample: str, invoice_type: str) -> Document:
    return Document(
        id=doc_id,
        provider=NAME,
        kind="invoice",
        content_type="application/xml",
        payload=_sample(sample),
        metadata={"invoice_type": invoice_type},
    )


def demo_batch(sandbox: Any, webhook_url: str) -> DemoBatch:
    """The demo (``ProviderInfo.demo``): two UBF invoices (one with a currency the validation
    rejects) and one eSF invoice."""
    keys = sandbox.config.get("provider_keys") if hasattr(sandbox, "config") else None
    if isinstance(keys, str):
        keys = keys.split(",")
    key = next(iter(keys or ()), "sandbox-provider-key")
    return DemoBatch(
        settings={
            "base_url": sandbox.url,
            "producer_id": "DEMO-LAWFIRM-001",
            "provider_key": str(key).strip(),
            "username": "docrelay-demo",
        },
        documents=(
            _invoice("ebh-ubf-INV-2024-0117", "ubf_invoice_ok.xml", "MultipleInvoiceUBF"),
            _invoice("ebh-ubf-INV-2024-0118", "ubf_invoice_bad_currency.xml", "MultipleInvoiceUBF"),
            _invoice("ebh-esf-INV-2024-0119", "esf_invoice_ok.xml", "ESF"),
        ),
    )


#: Imported at first use, not when the plugin is loaded to send (the sandbox, and what it
#: pulls in, is needed only by ``docrelay sandbox``, ``docrelay demo`` and the contract kit).
_LAZY = {"EbhSandbox": ".sandbox"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
