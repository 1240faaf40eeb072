"""docrelay provider plugin for the Procuros API v2.

A document is sent with ``POST /v2/transactions`` as ``{"type": <TransactionType>, "content":
{...}}``. Its payload is JSON: either the transaction ``content`` alone (the type then comes
from the document's ``kind``: ``"order"`` -> ``ORDER``, ``"invoice"`` -> ``INVOICE``...), or
the whole ``{"type", "content"}`` body. Failed documents are reported to Procuros with
``POST /v2/errors`` so its exception handling notifies the customer (:mod:`._report`).

When an answer is lost, the resend is answered 400 "Payload already received", which does not
say whether Procuros forwards the payload (201, ``TRANSMITTED``) or not (202, ``NO_ACTION``):
the plugin then looks the transaction up with ``GET /v2/all-transactions`` (also in
``reconcile``, before an ``unknown`` document is sent again) and claims ``TRANSMITTED`` only
when the listed status confirms it (see :mod:`._lookup`).

For the ERP write-back, :func:`erp_status` turns an outcome into the document status and the
"Error URL" that the Procuros guide "Tracking document status" asks the ERP to keep.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import docrelay
from docrelay import (
    Context,
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    ProviderInfo,
    Setting,
    TransportError,
)
from docrelay.auth import BearerToken

from ._classify import DEFAULT_DUPLICATE_MESSAGE, NO_ACTION, TRANSMITTED, classify
from ._lookup import DEFAULT_DROPPED_STATUSES, DEFAULT_FORWARDED_STATUSES, confirm, reconciled
from ._report import erp_status, error_report, report_failure
from ._transactions import TRANSACTION_TYPES, build_body, document_number, type_for_kind

if TYPE_CHECKING:
    from ._demo import batch as batch
    from .sandbox import ProcurosSandbox

__all__ = [
    "NO_ACTION",
    "TRANSACTION_TYPES",
    "TRANSMITTED",
    "ProcurosSandbox",
    "build_body",
    "build_request",
    "classify",
    "classify_response",
    "erp_status",
    "error_report",
    "on_failure",
    "provider_info",
    "reconcile",
    "type_for_kind",
]

NAME: Final = "procuros"
SEND_PATH: Final = "/v2/transactions"

_SETTINGS: Final = (
    Setting(
        "api_token",
        help="API token of your Procuros ERP Connection (Authorization: Bearer); per environment",
        secret=True,
        required=True,
    ),
    Setting(
        "duplicate_message",
        DEFAULT_DUPLICATE_MESSAGE,
        help="the 400 message by which Procuros says it already has the payload (= duplicate)",
    ),
    Setting(
        "duplicate_status",
        None,
        help="ERP status reported for a duplicate whose forward status is not confirmed by "
        "the lookup (default: none; never TRANSMITTED without knowing)",
    ),
    Setting(
        "lookup",
        True,
        help="after 'Payload already received' or an unknown outcome, look the transaction up "
        "with GET /v2/all-transactions to learn whether Procuros forwarded it",
    ),
    Setting(
        "lookup_match",
        "content",
        help="how a listed transaction is recognised: content (equal content) or "
        "document_number (same type and document number)",
    ),
    Setting(
        "lookup_days",
        30,
        help="search from this many days before the first send",
        minimum=0,
        maximum=3660,
    ),
    Setting(
        "lookup_max_pages",
        10,
        help="read at most this many pages of 100 transactions",
        minimum=1,
        maximum=1000,
    ),
    Setting(
        "forwarded_statuses",
        ",".join(DEFAULT_FORWARDED_STATUSES),
        help="listed statuses that mean forwarded (TRANSMITTED)",
    ),
    Setting(
        "dropped_statuses",
        ",".join(DEFAULT_DROPPED_STATUSES),
        help="listed statuses that mean not forwarded (NO_ACTION)",
    ),
    Setting(
        "report_errors",
        True,
        help="report failed documents to Procuros with POST /v2/errors",
    ),
    Setting(
        "report_after_failures",
        1,
        help="report an error from this many failed delivery rounds on (0 = never report)",
        minimum=0,
    ),
)


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    """The provider: environments, bearer token, payload deduplication, settings."""
    return ProviderInfo(
        name=NAME,
        hook_api=2,
        content_type="application/json",
        environments={
            "sandbox": "http://127.0.0.1:8702",
            "staging": "https://api.procuros-staging.io",
            "production": "https://api.procuros.io",
        },
        default_environment="sandbox",
        auth=BearerToken("api_token"),
        # No idempotency header exists at Procuros: it recognises a payload it already has.
        idempotency="payload",
        request_id_header="X-Request-Id",
        # "document": a payload that is the whole {type, content} body.
        kinds=(*(t.lower() for t in TRANSACTION_TYPES), "document"),
        async_validation="none",
        settings=_SETTINGS,
        credential_setting="api_token",
        sandbox="docrelay_procuros.sandbox:ProcurosSandbox",
        demo="docrelay_procuros._demo:batch",
    )


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """``POST /v2/transactions``; the type, the document number and the day of the first send
    are kept in ``ctx.state`` (they bound a later lookup of the transaction)."""
    body = build_body(document)
    ctx.state["transaction_type"] = body["type"]
    ctx.state.setdefault("first_sent_on", datetime.now(UTC).date().isoformat())
    number = document_number(body["type"], body["content"])
    if number is not None:
        ctx.state["document_number"] = number
    return HttpRequest(
        method="POST",
        url=SEND_PATH,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None,
    error: TransportError | None,
    ctx: Context,
    document: Document | None,
) -> Outcome | None:
    """Procuros' answers (the table is in :mod:`._classify`); after "Payload already
    received", the lookup tells what Procuros did with the payload the first time."""
    if response is None:
        return None  # transport errors: docrelay's generic answer
    duplicate_status = ctx.setting("duplicate_status")
    outcome = classify(
        response,
        duplicate_message=str(ctx.setting("duplicate_message", DEFAULT_DUPLICATE_MESSAGE)),
        duplicate_status=str(duplicate_status) if duplicate_status else None,
    )
    if outcome is None or outcome.kind is not OutcomeKind.DUPLICATE:
        return outcome
    return confirm(outcome, document, ctx)


@docrelay.hookimpl
def reconcile(document: Document, ctx: Context) -> Outcome | None:
    """After an ``unknown`` outcome, look the transaction up before sending again.

    Found and forwarded: ``delivered`` (``TRANSMITTED``); found and dropped: ``no_action``;
    found with another status: ``duplicate`` without an ERP status (forward status unknown);
    certainly not listed: ``retry`` (send again). ``None`` when the lookup cannot tell: the
    document is sent again, and Procuros recognises a payload it has.
    """
    return reconciled(document, ctx)


@docrelay.hookimpl
def on_failure(document: Document, outcome: Outcome, ctx: Context) -> None:
    """Report the failure with ``POST /v2/errors`` once ``report_after_failures`` is reached
    (a report that cannot be made is logged, without secrets, and forgotten)."""
    report_failure(document, outcome, ctx)


#: Imported at first use, not when the plugin is loaded to send (the sandbox, and what it
#: pulls in, is needed only by ``docrelay sandbox``, ``docrelay demo`` and the contract kit).
_LAZY = {"batch": "._demo", "ProcurosSandbox": ".sandbox"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
