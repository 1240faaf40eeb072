"""docrelay provider plugin for the Procuros API v2.

A document is sent with ``POST /v2/transactions`` as ``{"type": <TransactionType>, "content":
{...}}``. Its payload is JSON: either the transaction ``content`` alone (the type then comes
from the document's ``kind``: ``"order"`` -> ``ORDER``, ``"invoice"`` -> ``INVOICE``...), or
the whole ``{"type", "content"}`` body. Failed documents are reported to Procuros with
``POST /v2/errors`` so its exception handling notifies the customer.

For the ERP write-back, :func:`erp_status` turns an outcome into the document status and the
"Error URL" that the Procuros guide "Tracking document status" asks the ERP to keep.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

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

from ._classify import DEFAULT_DUPLICATE_MESSAGE, NO_ACTION, TRANSMITTED, classify
from ._transactions import TRANSACTION_TYPES, TYPES, document_number, type_for_kind

if TYPE_CHECKING:
    from docrelay.sandbox import Sandbox

__all__ = [
    "NO_ACTION",
    "TRANSACTION_TYPES",
    "TRANSMITTED",
    "build_body",
    "classify",
    "erp_status",
    "error_report",
    "type_for_kind",
]

NAME: Final = "procuros"
SEND_PATH: Final = "/v2/transactions"
ERRORS_PATH: Final = "/v2/errors"

log = logging.getLogger("docrelay.procuros")

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
        TRANSMITTED,
        help="ERP status reported for a duplicate (the payload was transmitted before)",
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
    ),
)


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name=NAME,
        content_type="application/json",
        title="Procuros (EDI network, API v2)",
        environments={
            "sandbox": "http://127.0.0.1:8702",
            "staging": "https://api.procuros-staging.io",
            "production": "https://api.procuros.io",
        },
        default_environment="sandbox",
        auth="bearer",
        # "document": a payload that is the whole {type, content} body.
        kinds=(*(t.lower() for t in TRANSACTION_TYPES), "document"),
        max_payload_bytes=None,
        rate_limit=None,
        idempotency="payload",
        async_validation="none",
        settings=_SETTINGS,
        credential_setting="api_token",
        docs_url="https://docs.procuros.io/en/api/v2/overview",
    )


@docrelay.hookimpl
def provider_sandbox() -> type[Sandbox]:
    from .sandbox import ProcurosSandbox

    return ProcurosSandbox


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


def build_body(document: Document) -> dict[str, Any]:
    """The ``SendTransaction`` body for *document*; :class:`DocumentError` when impossible.

    A payload that is a JSON object with ``type`` and ``content`` is the whole body; any other
    JSON object is the ``content`` and the type comes from the document's kind.
    """
    try:
        data = document.json()
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DocumentError(f"document {document.id}: payload is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DocumentError(f"document {document.id}: payload must be a JSON object")
    kind_type = type_for_kind(document.kind)
    if "type" in data and "content" in data:
        body_type = data.get("type")
        if not isinstance(data.get("content"), dict):
            raise DocumentError(f"document {document.id}: content must be a JSON object")
        if not isinstance(body_type, str) or body_type not in TYPES:
            raise DocumentError(
                f"document {document.id}: type {body_type!r} is not a Procuros TransactionType"
            )
        if kind_type is not None and kind_type != body_type:
            raise DocumentError(
                f"document {document.id}: kind {document.kind!r} means {kind_type}, "
                f"but the payload says {body_type}"
            )
        return {"type": body_type, "content": data.get("content")}
    if kind_type is None:
        raise DocumentError(
            f"document {document.id}: kind {document.kind!r} has no Procuros TransactionType; "
            "use one of "
            + ", ".join(t.lower() for t in TRANSACTION_TYPES)
            + " or send the whole {type, content} body"
        )
    return {"type": kind_type, "content": data}


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    body = build_body(document)
    ctx.state["transaction_type"] = body["type"]
    number = document_number(body["type"], body["content"])
    if number is not None:
        ctx.state["document_number"] = number
    return HttpRequest(
        method="POST",
        url=SEND_PATH,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


def _auth_headers(ctx: Context) -> dict[str, str]:
    token = ctx.setting("api_token")
    if not isinstance(token, str) or not token.strip():
        raise OutcomeError(
            Outcome(
                OutcomeKind.CONFIG_ERROR,
                message="procuros: the api_token setting is not set",
                rule="procuros:no-api-token",
            )
        )
    ctx.secret(token.strip())
    return {"Authorization": "Bearer " + token.strip()}


@docrelay.hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str]:
    # No idempotency header exists at Procuros: it recognises a payload it already has.
    return _auth_headers(ctx)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome:
    duplicate_message = ctx.setting("duplicate_message", DEFAULT_DUPLICATE_MESSAGE)
    duplicate_status = ctx.setting("duplicate_status", TRANSMITTED)
    return classify(
        response,
        error,
        duplicate_message=str(duplicate_message),
        duplicate_status=str(duplicate_status) if duplicate_status else None,
    )


# ---------------------------------------------------------------------------------------------
# After the send
# ---------------------------------------------------------------------------------------------


def erp_status(outcome: Outcome | None) -> tuple[str | None, str | None]:
    """``(status, error_url)`` for the ERP document, per "Tracking document status".

    ``("TRANSMITTED", None)`` after a 201 (and a duplicate), ``("NO_ACTION", None)`` after a
    202, ``(None, error_url)`` after a rejection (the status stays empty so the corrected
    document is picked up again; the portal link goes into the "Error URL" field), and
    ``(None, None)`` for everything else (nothing final yet).
    """
    if outcome is None:
        return None, None
    if outcome.is_success:
        return outcome.provider_status, None
    if outcome.kind in (OutcomeKind.REJECTED, OutcomeKind.CONFIG_ERROR):
        return None, outcome.error_url
    return None, None


def _reason(outcome: Outcome) -> str:
    parts: list[str] = []
    if outcome.message:
        parts.append(outcome.message)
    for fe in outcome.field_errors[:20]:
        parts.append(f"{fe.field}: {fe.message}" if fe.field else fe.message)
    if not parts:
        parts.append(f"delivery {outcome.kind.value}")
        if outcome.status is not None:
            parts.append(f"(HTTP {outcome.status})")
    return " ".join(parts) if len(parts) <= 2 else parts[0] + " " + "; ".join(parts[1:])


def error_report(document: Document, outcome: Outcome, ctx: Context) -> dict[str, Any]:
    """The ``POST /v2/errors`` body for a failed *document*."""
    try:
        body = build_body(document)
        type_: str | None = body["type"]
        number = document_number(type_, body["content"])
    except DocumentError:
        type_ = type_for_kind(document.kind)
        number = None
    identifier = document.metadata.get("document_number") or number or document.id
    context: dict[str, str] = {"docrelayDocumentId": document.id, "outcome": outcome.kind.value}
    if outcome.status is not None:
        context["httpStatus"] = str(outcome.status)
    if outcome.error_url:
        context["errorUrl"] = outcome.error_url
    if outcome.rule:
        context["rule"] = outcome.rule
    for i, fe in enumerate(outcome.field_errors[:20]):
        context[f"error.{i}.{fe.field or 'document'}"] = fe.message
    report: dict[str, Any] = {
        "errorReason": _reason(outcome)[:2000],
        "errorType": "DATA" if outcome.kind is OutcomeKind.REJECTED else "INTERNAL",
        "errorContext": context,
        "transactionIdentifier": identifier,
    }
    if type_ is not None:
        report["transactionType"] = type_
    return report


def _report_threshold(ctx: Context) -> int:
    try:
        return int(ctx.setting("report_after_failures", 1))
    except (TypeError, ValueError):
        return 1


def _enabled(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"0", "false", "no", "off", ""}
    return bool(value)


@docrelay.hookimpl
def on_failure(document: Document, outcome: Outcome, ctx: Context) -> None:
    """Report the failure with ``POST /v2/errors`` once ``report_after_failures`` is reached.

    Never raises: a report that cannot be made is logged (without secrets) and forgotten.
    """
    try:
        if not _enabled(ctx.setting("report_errors", True)):
            return
        threshold = _report_threshold(ctx)
        if threshold <= 0 or ctx.failures < threshold:
            log.debug(
                "procuros: %s failed %d time(s); reporting from %d",
                document.id,
                ctx.failures,
                threshold,
            )
            return
        report = error_report(document, outcome, ctx)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update(_auth_headers(ctx))
        response = ctx.request(
            "POST",
            ERRORS_PATH,
            body=json.dumps(report, ensure_ascii=False).encode("utf-8"),
            headers=headers,
        )
    except TransportFailure as exc:
        log.warning("procuros: error report for %s not delivered: %s", document.id, exc.error.kind)
        return
    except OutcomeError as exc:
        log.warning("procuros: error report for %s not sent: %s", document.id, exc.outcome.message)
        return
    except Exception as exc:  # noqa: BLE001 - on_failure must never raise
        log.warning("procuros: error report for %s failed: %s", document.id, type(exc).__name__)
        return
    if response.status == 201:
        data = response.json()
        url = data.get("errorUrl") if isinstance(data, Mapping) else None
        log.info(
            "procuros: error of %s reported to Procuros (%s)",
            document.id,
            url if isinstance(url, str) else "no error url",
        )
    else:
        log.warning("procuros: error report for %s answered HTTP %d", document.id, response.status)


@docrelay.hookimpl
def demo_batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch:
    from ._demo import batch

    return batch(sandbox)
