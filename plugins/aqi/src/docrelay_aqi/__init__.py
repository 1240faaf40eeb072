"""docrelay provider plugin for Riverty Accounting as a Service (AaaS) through AQI.

Six request types, one document kind each, all ``POST`` under
``/accounting/v1/businesses/{businessCode}/customers/{customerNumber}/orders``:

=============  ==========================================  ===========================
kind           path                                        requestType (notification)
=============  ==========================================  ===========================
order          ``.../orders``                              GET_ORDER
invoice        ``.../orders/{orderReference}/invoices``    GET_BOOKING_CONFIRMATION
cancellation   ``.../orders/{orderReference}/cancellations``  GET_CANCELLATION
goodwill       ``.../orders/{orderReference}/goodwills``   GET_GOODWILL
return         ``.../orders/{orderReference}/returns``     GET_RETURN
payment        ``.../orders/{orderReference}/payments``    GET_PAYMENT
=============  ==========================================  ===========================

AQI answers ``200`` when it has received a request (``accepted``); the final answer comes as
an ``accounting/EDIErrorSent`` webhook (``OK`` -> delivered, ``ERROR_IN_FILE`` -> rejected).
The ``X-Request-ID`` header carries the transactionId, docrelay's idempotency key, which stays
the same across corrected revisions until AQI answers OK.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import docrelay
from docrelay import (
    Context,
    Document,
    DocumentError,
    DocumentView,
    HttpRequest,
    HttpResponse,
    Notification,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    Setting,
    TransportError,
)
from docrelay.auth import ApiKeyHeader
from docrelay.helpers import json_object, scalar_text

from ._classify import DEFAULT_BAD_KEY_MARKERS, NAME, classify
from ._notify import (
    DEFAULT_DUPLICATE_MARKERS,
    DEFAULT_ERROR_STATUSES,
    DEFAULT_WARNING_STATUSES,
    DataSourceMismatch,
    parse_notification_body,
)

if TYPE_CHECKING:
    from ._demo import demo_batch, sample, sample_document
    from .sandbox import AqiSandbox

__all__ = [
    "KINDS",
    "NAME",
    "AqiSandbox",
    "build_request",
    "classify_response",
    "demo_batch",
    "expected_data_source",
    "hold",
    "idempotency_key",
    "order_reference",
    "parse_notification",
    "provider_info",
    "sample",
    "sample_document",
]

log = logging.getLogger("docrelay.aqi")

#: Environment -> the ``DataSource`` its notifications carry (seed 004: PreProd = UAT, Prod =
#: Production; the local sandbox stands for a test environment).
DEFAULT_DATA_SOURCES: Mapping[str, str] = {
    "sandbox": "PreProd",
    "uat": "PreProd",
    "production": "Prod",
}

#: Document kind -> the path segment after ``.../orders/{orderReference}`` (``None``: orders).
KINDS: dict[str, str | None] = {
    "order": None,
    "invoice": "invoices",
    "cancellation": "cancellations",
    "goodwill": "goodwills",
    "return": "returns",
    "payment": "payments",
}

#: Document states that mean "AQI confirmed it" (the EDIErrorSent answer was OK).
CONFIRMED_STATES = frozenset({"delivered", "duplicate"})
#: States of a previous revision after which its transactionId must not be reused.
_ENDED_OK = frozenset({"delivered", "duplicate", "no_action"})

_KEY_NAMESPACE = uuid.UUID("5d0c2a8e-6f54-4c43-9d0e-0a9f3c1b7a41")

SETTINGS = (
    Setting(
        "subscription_key",
        help="AQI subscription key (X-Subscription-Key), primary or secondary, per environment.",
        secret=True,
        required=True,
    ),
    Setting(
        "business_code",
        default="1000",
        help="businessCode when a document has no 'business_code' metadata "
        "(1000 is the sandbox's; set your legal entity's for UAT and production).",
    ),
    Setting(
        "bad_key_markers",
        default=list(DEFAULT_BAD_KEY_MARKERS),
        help="Words in a 500 answer meaning the subscription key is wrong or expired "
        "(config_error instead of retry); case-insensitive.",
    ),
    Setting(
        "duplicate_markers",
        default=list(DEFAULT_DUPLICATE_MARKERS),
        help="Words in an ERROR_IN_FILE about the transactionId meaning it was already "
        "processed (the document counts as duplicate, i.e. delivered).",
    ),
    Setting(
        "hold_without_order",
        default="hold",
        help="What an invoice/cancellation/goodwill/return/payment does when docrelay knows "
        "no order document with its order_reference: 'hold' (wait for one) or 'send'.",
    ),
    Setting(
        "return_waits_for_invoice",
        default=True,
        help="A return also waits until an invoice of its order is confirmed "
        "(AaaS processes returns of invoiced items only).",
    ),
    Setting(
        "data_sources",
        default=dict(DEFAULT_DATA_SOURCES),
        help="Environment -> the DataSource its notifications carry (a table, or "
        "'uat=PreProd,production=Prod'); a notification of another DataSource is refused.",
    ),
    Setting(
        "data_source",
        default=None,
        help="The DataSource to accept, overriding data_sources (e.g. when base_url points "
        "to a proxy and env is not set).",
    ),
    Setting(
        "require_data_source",
        default=False,
        help="Refuse notifications without a DataSource too (the seed's examples have none).",
    ),
    Setting(
        "detail_status_field",
        default="status",
        help="The errorDetails item field holding W (truncated, processed) or E (not "
        "processed); assumed, the seed names the statuses but not the field.",
    ),
    Setting(
        "warning_statuses",
        default=list(DEFAULT_WARNING_STATUSES),
        help="Item statuses meaning a warning (the request was processed).",
    ),
    Setting(
        "error_statuses",
        default=list(DEFAULT_ERROR_STATUSES),
        help="Item statuses meaning an error (the request was not processed).",
    ),
)


def _names(ctx: Context, name: str, default: tuple[str, ...]) -> list[str]:
    """A list setting (the configuration checks that it is a list)."""
    return [str(v) for v in ctx.setting(name, default)]


# ---------------------------------------------------------------------------------------------
# Declaration
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name=NAME,
        hook_api=2,
        content_type="application/json",
        environments={
            "sandbox": "http://127.0.0.1:8705",
            "uat": "https://api-uat.accounting.riverty.io",
            "production": "https://api.accounting.riverty.io",
        },
        default_environment="sandbox",
        # AQI answers a wrong or expired key with 500 (seed 004): see _classify.
        auth=ApiKeyHeader("X-Subscription-Key", "subscription_key"),
        # The transactionId (seed 004: unique per request, resent after ERROR_IN_FILE).
        idempotency="key",
        idempotency_header="X-Request-ID",
        request_id_header="X-Request-ID",
        kinds=tuple(KINDS),
        async_validation="webhook",
        settings=SETTINGS,
        credential_setting="subscription_key",
        sandbox="docrelay_aqi.sandbox:AqiSandbox",
        demo="docrelay_aqi._demo:demo_batch",
    )


# ---------------------------------------------------------------------------------------------
# Addressing
# ---------------------------------------------------------------------------------------------


def _payload_or_empty(document: Document) -> dict[str, Any]:
    try:
        return json_object(document)
    except DocumentError:
        return {}


def order_reference(document: Document, data: Mapping[str, Any] | None = None) -> str | None:
    """The order a document belongs to: metadata ``order_reference``, else the payload's
    ``orderReference``."""
    if data is None:
        data = _payload_or_empty(document)
    return scalar_text(document.metadata.get("order_reference") or data.get("orderReference"))


def _path(document: Document, ctx: Context, data: Mapping[str, Any]) -> str:
    business = document.metadata.get("business_code") or ctx.setting("business_code", "1000")
    customer = scalar_text(document.metadata.get("customer_number") or data.get("customerNumber"))
    if not customer:
        raise DocumentError(
            f"{document.id}: no customer number (metadata 'customer_number' or the payload's "
            "'customerNumber')"
        )
    path = (
        f"/accounting/v1/businesses/{quote(str(business), safe='')}"
        f"/customers/{quote(customer, safe='')}/orders"
    )
    segment = KINDS[document.kind]
    if segment is None:
        return path
    ref = order_reference(document, data)
    if not ref:
        raise DocumentError(
            f"{document.id}: no order reference (metadata 'order_reference' or the "
            "payload's 'orderReference')"
        )
    return f"{path}/{quote(ref, safe='')}/{segment}"


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


def _views(ctx: Context, kind: str, document: Document, ref: str) -> list[DocumentView]:
    found = ctx.find_documents(kind=kind, metadata={"order_reference": ref})
    customer = document.metadata.get("customer_number")
    business = document.metadata.get("business_code")

    def same(view: DocumentView) -> bool:
        if view.id == document.id:
            return False
        other_customer = view.metadata.get("customer_number")
        other_business = view.metadata.get("business_code")
        if customer and other_customer and customer != other_customer:
            return False
        return not (business and other_business and business != other_business)

    return [v for v in found if same(v)]


def _waiting(ctx: Context, kind: str, document: Document, ref: str, what: str) -> str | None:
    views = _views(ctx, kind, document, ref)
    if any(v.state in CONFIRMED_STATES for v in views):
        return None
    if not views:
        policy = str(ctx.setting("hold_without_order", "hold")).strip().lower()
        if policy == "send":
            return None
        return f"{what} unknown to docrelay"
    states = ", ".join(sorted({v.state for v in views}))
    if all(v.state in {"rejected", "failed"} for v in views):
        return f"waiting for {what}: it was not confirmed by AQI ({states}); correct it first"
    return f"waiting for {what} to be confirmed by AQI (now {states})"


@docrelay.hookimpl
def hold(document: Document, ctx: Context) -> str | None:
    """Invoices, cancellations, goodwills, returns and payments wait for their order (and a
    return for an invoice of it) to be confirmed: AaaS refuses them out of order."""
    if document.kind not in KINDS or document.kind == "order":
        return None
    ref = order_reference(document)
    if ref is None:
        return None  # build_request refuses the document with a clear reason
    reason = _waiting(ctx, "order", document, ref, f"order {ref}")
    if reason is not None:
        return reason
    if document.kind == "return" and ctx.setting("return_waits_for_invoice", True):
        return _waiting(ctx, "invoice", document, ref, f"an invoice of order {ref}")
    return None


@docrelay.hookimpl
def idempotency_key(document: Document, ctx: Context) -> str:
    """The transactionId: kept across corrected revisions until AQI answered OK.

    AQI asks to resend corrected data *with the same transactionId* after ERROR_IN_FILE and
    refuses a transactionId that already ended OK.
    """
    if ctx.previous_key and ctx.previous_state not in _ENDED_OK:
        return ctx.previous_key
    return uuid.uuid5(
        _KEY_NAMESPACE, f"{document.provider}\0{document.id}\0{document.revision}"
    ).hex


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """``POST`` the payload as it is to the kind's path (see the module's table)."""
    if document.kind not in KINDS:
        raise DocumentError(
            f"{document.id}: AQI has no request type for kind {document.kind!r} "
            f"(use one of {', '.join(KINDS)})"
        )
    path = _path(document, ctx, json_object(document))
    try:
        _data_sources(ctx)  # a malformed mapping would refuse every notification later
    except ValueError as exc:
        raise OutcomeError(
            Outcome(kind=OutcomeKind.CONFIG_ERROR, message=str(exc), rule="aqi:bad-data-sources")
        ) from None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    return HttpRequest(method="POST", url=path, body=document.payload, headers=headers)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    """AQI's own answers (:mod:`._classify`); ``None`` leaves the rest to the core."""
    if response is None:
        return None
    return classify(
        response, bad_key_markers=_names(ctx, "bad_key_markers", DEFAULT_BAD_KEY_MARKERS)
    )


# ---------------------------------------------------------------------------------------------
# After the send
# ---------------------------------------------------------------------------------------------


def _data_sources(ctx: Context) -> dict[str, str]:
    raw = ctx.setting("data_sources", dict(DEFAULT_DATA_SOURCES))
    if isinstance(raw, Mapping):
        return {str(k).strip().lower(): str(v).strip() for k, v in raw.items()}
    parts = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    out: dict[str, str] = {}
    for part in (str(p).strip() for p in parts if str(p).strip()):
        env, sep, source = part.partition("=")
        if not sep or not env.strip() or not source.strip():
            raise ValueError(
                f"aqi setting data_sources: {part[:60]!r} is not ENVIRONMENT=DATASOURCE"
            )
        out[env.strip().lower()] = source.strip()
    return out


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def expected_data_source(ctx: Context) -> str | None:
    """The DataSource docrelay's environment sends: the setting ``data_source``, else
    ``data_sources`` of the environment (``env``, or the environment whose URL is
    ``base_url``, or ``sandbox`` for a loopback URL); ``None`` when it cannot be told."""
    explicit = ctx.setting("data_source")
    if explicit not in (None, ""):
        return str(explicit).strip()
    env = ctx.environment
    if not env:
        base = ctx.base_url.rstrip("/")
        env = next(
            (name for name, url in ctx.provider.environments.items() if url.rstrip("/") == base),
            None,
        )
    if not env and _is_loopback(ctx.base_url):
        env = "sandbox"
    if not env:
        return None
    return _data_sources(ctx).get(env.strip().lower())


@docrelay.hookimpl
def parse_notification(
    body: bytes, headers: Mapping[str, str], ctx: Context
) -> Notification | None:
    """Parse an EDIErrorSent webhook; one of another environment (``DataSource``) is refused
    with a ValueError (the webhook answers 400, nothing is recorded or applied) and logged."""
    try:
        return parse_notification_body(
            body,
            duplicate_markers=_names(ctx, "duplicate_markers", DEFAULT_DUPLICATE_MARKERS),
            status_field=str(ctx.setting("detail_status_field", "status") or ""),
            warning_statuses=_names(ctx, "warning_statuses", DEFAULT_WARNING_STATUSES),
            error_statuses=_names(ctx, "error_statuses", DEFAULT_ERROR_STATUSES),
            expected_data_source=expected_data_source(ctx),
            require_data_source=bool(ctx.setting("require_data_source", False)),
        )
    except DataSourceMismatch as exc:
        log.warning("aqi webhook refused: %s", exc)
        raise


#: Imported at first use, not when the plugin is loaded to send (the sandbox, and what it
#: pulls in, is needed only by ``docrelay sandbox``, ``docrelay demo`` and the contract kit).
_LAZY = {
    "demo_batch": "._demo",
    "sample": "._demo",
    "sample_document": "._demo",
    "AqiSandbox": ".sandbox",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
