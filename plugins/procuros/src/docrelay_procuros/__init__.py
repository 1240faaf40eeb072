"""docrelay provider plugin for the Procuros API v2.

A document is sent with ``POST /v2/transactions`` as ``{"type": <TransactionType>, "content":
{...}}``. Its payload is JSON: either the transaction ``content`` alone (the type then comes
from the document's ``kind``: ``"order"`` -> ``ORDER``, ``"invoice"`` -> ``INVOICE``...), or
the whole ``{"type", "content"}`` body. Failed documents are reported to Procuros with
``POST /v2/errors`` so its exception handling notifies the customer.

When an answer is lost, the resend is answered 400 "Payload already received", which does not
say whether Procuros forwards the payload (201, ``TRANSMITTED``) or not (202, ``NO_ACTION``):
the plugin then looks the transaction up with ``GET /v2/all-transactions`` (also in
``reconcile``, before an ``unknown`` document is sent again) and claims ``TRANSMITTED`` only
when the listed status confirms it (see ``_lookup``).

For the ERP write-back, :func:`erp_status` turns an outcome into the document status and the
"Error URL" that the Procuros guide "Tracking document status" asks the ERP to keep.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import attrs
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
from ._lookup import (
    DEFAULT_DROPPED_STATUSES,
    DEFAULT_FORWARDED_STATUSES,
    Lookup,
    find_transaction,
    forward_decision,
)
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
    "reconcile",
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
    Setting("lookup_days", 30, help="search from this many days before the first send"),
    Setting("lookup_max_pages", 10, help="read at most this many pages of 100 transactions"),
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
    # The day of the first send bounds a later lookup of the transaction (filter[created_between]).
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
    duplicate_status = ctx.setting("duplicate_status")
    outcome = classify(
        response,
        error,
        duplicate_message=str(duplicate_message),
        duplicate_status=str(duplicate_status) if duplicate_status else None,
    )
    if outcome.kind is not OutcomeKind.DUPLICATE:
        return outcome
    try:
        return _confirm_duplicate(outcome, ctx)
    except Exception as exc:  # noqa: BLE001 - the classifier never raises
        return _unconfirmed(outcome, f"the lookup failed ({type(exc).__name__})")


def _lookup_enabled(ctx: Context) -> bool:
    return _enabled(ctx.setting("lookup", True))


def _lookup(
    document: Document, ctx: Context
) -> tuple[Lookup, str | None, Mapping[str, Any] | None]:
    try:
        body = build_body(document)
    except DocumentError as exc:
        return Lookup(error=str(exc)), None, None
    found = find_transaction(document, ctx, body)
    decision, tx = forward_decision(found, ctx)
    if isinstance(tx, Mapping) and isinstance(tx.get("procurosTransactionId"), str):
        ctx.state["procuros_transaction_id"] = tx["procurosTransactionId"]
        ctx.state["procuros_transaction_status"] = str(tx.get("status"))
    return found, decision, tx


def _tx_ref(tx: Mapping[str, Any] | None) -> str | None:
    ref = tx.get("procurosTransactionId") if tx is not None else None
    return ref[:200] if isinstance(ref, str) and ref else None


def _unconfirmed(outcome: Outcome, why: str) -> Outcome:
    said = outcome.message or DEFAULT_DUPLICATE_MESSAGE
    return attrs.evolve(
        outcome,
        message=f"{said}; forward status unknown ({why}): Procuros has the payload, but "
        "whether it forwards it (TRANSMITTED) or not (NO_ACTION) is not confirmed; check the "
        "transaction in the Procuros portal",
        rule="procuros:400-payload-already-received-unconfirmed",
    )


def _confirm_duplicate(outcome: Outcome, ctx: Context) -> Outcome:
    """After "Payload already received": find out what Procuros did with the payload."""
    document = ctx.document
    if not _lookup_enabled(ctx):
        return _unconfirmed(outcome, "lookup switched off")
    if document is None:
        return _unconfirmed(outcome, "no document to look up")
    found, decision, tx = _lookup(document, ctx)
    ref = _tx_ref(tx)
    said = outcome.message or DEFAULT_DUPLICATE_MESSAGE
    if decision == TRANSMITTED:
        return attrs.evolve(
            outcome,
            provider_status=TRANSMITTED,
            provider_ref=ref,
            message=f"{said}; transaction {ref} is {tx.get('status') if tx else '?'} at Procuros "
            "(accepted for forwarding)",
            rule="procuros:400-payload-already-received-transmitted",
        )
    if decision == NO_ACTION:
        return Outcome(
            OutcomeKind.NO_ACTION,
            status=outcome.status,
            message=f"{said}; transaction {ref} is {tx.get('status') if tx else '?'} at "
            "Procuros (accepted, not forwarded)",
            error_url=outcome.error_url,
            request_id=outcome.request_id,
            provider_ref=ref,
            provider_status=NO_ACTION,
            rule="procuros:400-payload-already-received-no-action",
        )
    if tx is not None:
        why = f"transaction {ref} is {tx.get('status')}"
    elif found.error:
        why = found.error
    else:
        why = "no such transaction in the list"
    return attrs.evolve(_unconfirmed(outcome, why), provider_ref=ref or outcome.provider_ref)


@docrelay.hookimpl
def reconcile(document: Document, ctx: Context) -> Outcome | None:
    """After an ``unknown`` outcome, look the transaction up before sending again.

    Found and forwarded: ``delivered`` (``TRANSMITTED``); found and dropped: ``no_action``;
    found with another status: ``duplicate`` without an ERP status (forward status unknown);
    certainly not listed: ``retry`` (send again). ``None`` when the lookup cannot tell: the
    document is sent again, and Procuros recognises a payload it has.
    """
    if not _lookup_enabled(ctx):
        return None
    found, decision, tx = _lookup(document, ctx)
    ref = _tx_ref(tx)
    if decision == TRANSMITTED:
        return Outcome(
            OutcomeKind.DELIVERED,
            message=f"transaction {ref} is {tx.get('status') if tx else '?'} at Procuros "
            "(accepted for forwarding)",
            provider_ref=ref,
            provider_status=TRANSMITTED,
            rule="procuros:reconcile-transmitted",
        )
    if decision == NO_ACTION:
        return Outcome(
            OutcomeKind.NO_ACTION,
            message=f"transaction {ref} is {tx.get('status') if tx else '?'} at Procuros "
            "(accepted, not forwarded)",
            provider_ref=ref,
            provider_status=NO_ACTION,
            rule="procuros:reconcile-no-action",
        )
    if tx is not None:
        duplicate_status = ctx.setting("duplicate_status")
        return Outcome(
            OutcomeKind.DUPLICATE,
            message=f"transaction {ref} is {tx.get('status')} at Procuros; forward status "
            "unknown: check the transaction in the Procuros portal",
            provider_ref=ref,
            provider_status=str(duplicate_status) if duplicate_status else None,
            rule="procuros:reconcile-unconfirmed",
        )
    if found.complete:
        return Outcome(
            OutcomeKind.RETRY,
            message="the transaction is not in Procuros' list of sent transactions; sending it",
            rule="procuros:reconcile-not-found",
        )
    log.info("procuros: lookup of %s not possible (%s); sending again", document.id, found.error)
    return None


# ---------------------------------------------------------------------------------------------
# After the send
# ---------------------------------------------------------------------------------------------


def erp_status(outcome: Outcome | None) -> tuple[str | None, str | None]:
    """``(status, error_url)`` for the ERP document, per "Tracking document status".

    ``("TRANSMITTED", None)`` after a 201 (and a duplicate the lookup confirmed as forwarded),
    ``("NO_ACTION", None)`` after a 202 (or a lookup that found it dropped), ``(None, None)``
    for a duplicate whose forward status is unknown (unless ``duplicate_status`` is set),
    ``(None, error_url)`` after a rejection (the status stays empty so the corrected document
    is picked up again; the portal link goes into the "Error URL" field), and ``(None, None)``
    for everything else (nothing final yet).
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
