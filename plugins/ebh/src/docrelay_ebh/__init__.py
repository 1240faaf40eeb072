"""docrelay plugin for the eBillingHub (EBH) Validation API.

A document (eSF or UBF invoice XML) is POSTed as a *validation request*; eBillingHub answers
201 with the request's ``Id`` (``accepted``), and docrelay polls
``GET .../ValidationRequest/{Id}`` until the validation is done: 202 while running, 200 with
the ``ValidationResults`` when complete (``delivered``, or ``rejected`` with every result as a
field error). See README.md for settings and every assumption.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from importlib import resources
from typing import Any

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

from . import _classify
from .sandbox import EbhSandbox

__all__ = [
    "INVOICE_TYPES",
    "NAME",
    "build_request",
    "classify_response",
    "demo_batch",
    "poll_path",
    "poll_status",
    "prepare_headers",
    "provider_info",
    "provider_sandbox",
    "reconcile",
    "validation_path",
]

NAME = "ebh"
SANDBOX_URL = "http://127.0.0.1:8704"

#: Values of the ``InvoiceType`` header the Validation API accepts.
INVOICE_TYPES = ("ESF", "MultipleInvoiceUBF", "TimeEntryInvoice", "TimeEntryESF")
_URL_PREFIXES = {"new": "/ebh/validations", "old": "/validations/api"}
_API_VERSIONS = ("v1", "v2")

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
        choices=("new", "old"),
        help='"new": {base}/ebh/validations/{v}/...; "old" (deprecated by eBillingHub): '
        "{base}/validations/api/{v}/...",
    ),
    Setting(
        "api_version",
        default="v2",
        choices=("v1", "v2"),
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


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _config_error(message: str, rule: str) -> OutcomeError:
    return OutcomeError(Outcome(kind=OutcomeKind.CONFIG_ERROR, message=message, rule=rule))


def _str_list(value: Any, default: Collection[str]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Collection):
        return [str(v).strip() for v in value if str(v).strip()]
    return list(default)


def _int_list(value: Any, default: Collection[int]) -> list[int]:
    out = []
    for v in _str_list(value, [str(d) for d in default]):
        try:
            out.append(int(v))
        except ValueError:
            continue
    return out


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _poll_wait(ctx: Context) -> float | None:
    value = ctx.setting("poll_interval")
    if value is None or value == "":
        return None
    try:
        wait = float(value)
    except (TypeError, ValueError):
        return None
    return wait if wait >= 0 else None


def validation_path(ctx: Context) -> str:
    """``{prefix}/{v}/ValidationRequest`` for the configured URL style and API version.

    Raises :class:`docrelay.OutcomeError` (``config_error``) for a value that is not allowed.
    """
    style = str(ctx.setting("url_style", "new")).strip().lower()
    version = str(ctx.setting("api_version", "v2")).strip().lower()
    if style not in _URL_PREFIXES:
        raise _config_error(
            f"setting url_style must be 'new' or 'old', not {style!r}", "ebh:setting-url-style"
        )
    if version not in _API_VERSIONS:
        raise _config_error(
            f"setting api_version must be 'v1' or 'v2', not {version!r}",
            "ebh:setting-api-version",
        )
    return f"{_URL_PREFIXES[style]}/{version}/ValidationRequest"


def poll_path(ctx: Context, request_id: str) -> str:
    """The GET path of one validation request (same style and version as its POST)."""
    base = ctx.state.get("validation_path")
    if not isinstance(base, str) or not base.endswith("/ValidationRequest"):
        base = validation_path(ctx)
    return f"{base}/{request_id}"


def _auth_headers(ctx: Context) -> dict[str, str]:
    producer = ctx.setting("producer_id")
    key = ctx.setting("provider_key")
    if not producer or not str(producer).strip():
        raise _config_error("setting producer_id is required", "ebh:setting-producer-id")
    if not key or not str(key).strip():
        raise _config_error("setting provider_key is required", "ebh:setting-provider-key")
    headers = {
        "ProducerId": str(producer).strip(),
        "ProviderKey": ctx.secret(str(key).strip()),
        "Accept": "application/json",
    }
    username = ctx.setting("username")
    if username and str(username).strip():
        headers["Username"] = str(username).strip()
    return headers


def _classify_kwargs(ctx: Context) -> dict[str, Any]:
    return {
        "base_url": ctx.base_url,
        "error_severities": _str_list(
            ctx.setting("error_severities"), _classify.DEFAULT_ERROR_SEVERITIES
        ),
        "pending_statuses": _int_list(
            ctx.setting("pending_statuses"), _classify.DEFAULT_PENDING_STATUSES
        ),
        "failed_statuses": _int_list(
            ctx.setting("failed_statuses"), _classify.DEFAULT_FAILED_STATUSES
        ),
        "poll_wait": _poll_wait(ctx),
    }


def _is_poll_response(response: HttpResponse | None) -> bool:
    if response is None or not response.url:
        return False
    path = response.url.split("?", 1)[0].rstrip("/")
    parts = path.split("/")
    return len(parts) >= 2 and parts[-2].lower() == "validationrequest"


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name=NAME,
        content_type="application/xml",
        title="eBillingHub Validation API",
        environments={"sandbox": SANDBOX_URL},
        default_environment="sandbox",
        auth="api_key",
        kinds=("invoice", "document"),
        max_payload_bytes=None,
        rate_limit=None,
        idempotency="none",
        async_validation="poll",
        settings=SETTINGS,
        credential_setting="producer_id",
    )


@docrelay.hookimpl
def provider_sandbox() -> type[EbhSandbox]:
    return EbhSandbox


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    invoice_type = document.metadata.get("invoice_type")
    if invoice_type is not None:
        if invoice_type not in INVOICE_TYPES:
            raise DocumentError(
                f"metadata invoice_type {invoice_type[:60]!r} is not one of "
                + ", ".join(INVOICE_TYPES)
            )
    else:
        invoice_type = str(ctx.setting("invoice_type", "MultipleInvoiceUBF")).strip()
        if invoice_type not in INVOICE_TYPES:
            raise _config_error(
                f"setting invoice_type {invoice_type[:60]!r} is not one of "
                + ", ".join(INVOICE_TYPES),
                "ebh:setting-invoice-type",
            )
    head = document.payload[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        raise DocumentError("the eBillingHub Validation API takes XML; the payload is not XML")
    path = validation_path(ctx)
    # A new send creates a new validation request: forget the previous one (kept for audit).
    old = ctx.state.pop("validation_id", None)
    if old:
        previous = ctx.state.setdefault("previous_validation_ids", [])
        if isinstance(previous, list) and old not in previous:
            previous.append(old)
    for stale in ("validated_invoice_url", "validation_status"):
        ctx.state.pop(stale, None)
    ctx.state["validation_path"] = path
    ctx.state["invoice_type"] = invoice_type
    return HttpRequest(
        method="POST",
        url=path,
        body=document.payload,
        headers={"Content-Type": "application/xml", "InvoiceType": invoice_type},
    )


@docrelay.hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str] | None:
    if ctx.provider.name != NAME:
        return None
    return _auth_headers(ctx)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome:
    phase = "poll" if _is_poll_response(response) else "send"
    try:
        kwargs = _classify_kwargs(ctx)
    except Exception:  # noqa: BLE001 - never raise from the classifier
        kwargs = {"base_url": getattr(ctx, "base_url", "")}
    outcome = _classify.classify(response, error, phase=phase, **kwargs)
    if phase == "send" and outcome.kind == OutcomeKind.ACCEPTED and outcome.provider_ref:
        ctx.state["validation_id"] = outcome.provider_ref
        if outcome.request_id:
            ctx.state["operation_id"] = outcome.request_id
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
    try:
        response = ctx.request("GET", poll_path(ctx, str(request_id)), headers=_auth_headers(ctx))
    except TransportFailure as exc:
        return _classify.classify_transport(exc.error, phase="poll")
    outcome = _classify.classify(response, None, phase="poll", **_classify_kwargs(ctx))
    if outcome.provider_status is not None:
        ctx.state["validation_status"] = outcome.provider_status
    if outcome.kind == OutcomeKind.DELIVERED:
        url = _classify.validated_invoice_url(response.json(), ctx.base_url)
        if url:
            ctx.state["validated_invoice_url"] = url
    return outcome


@docrelay.hookimpl
def reconcile(document: Document, ctx: Context) -> Outcome | None:
    if not _flag(ctx.setting("resend_after_unknown"), True):
        return None
    return Outcome(
        kind=OutcomeKind.RETRY,
        message="eBillingHub has no lookup for validation requests; a validation request has "
        "no effect beyond the validation, so the document is sent again",
        rule="ebh:reconcile-resend",
    )


def _sample(name: str) -> bytes:
    return resources.files(__name__).joinpath("samples", name).read_bytes()


@docrelay.hookimpl
def demo_batch(sandbox: Any, webhook_url: str) -> DemoBatch:
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
            Document(
                id="ebh-ubf-INV-2024-0117",
                provider=NAME,
                kind="invoice",
                content_type="application/xml",
                payload=_sample("ubf_invoice_ok.xml"),
                metadata={"invoice_type": "MultipleInvoiceUBF"},
            ),
            Document(
                id="ebh-ubf-INV-2024-0118",
                provider=NAME,
                kind="invoice",
                content_type="application/xml",
                payload=_sample("ubf_invoice_bad_currency.xml"),
                metadata={"invoice_type": "MultipleInvoiceUBF"},
            ),
            Document(
                id="ebh-esf-INV-2024-0119",
                provider=NAME,
                kind="invoice",
                content_type="application/xml",
                payload=_sample("esf_invoice_ok.xml"),
                metadata={"invoice_type": "ESF"},
            ),
        ),
        expect=(
            "ebh-ubf-INV-2024-0117: accepted (201) then delivered (Validation Complete)",
            "ebh-ubf-INV-2024-0118: accepted (201) then rejected: "
            "The currency must follow ISO Codes",
            "ebh-esf-INV-2024-0119: accepted (201) then delivered (Validation Complete)",
        ),
    )
