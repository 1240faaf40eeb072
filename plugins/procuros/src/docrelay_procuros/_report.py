"""After the send: the ERP status of an outcome, and error reports with ``POST /v2/errors``.

The Procuros guide "Tracking document status" (seed 001) asks the ERP to keep a *Status*
(``TRANSMITTED`` after a 201, ``NO_ACTION`` after a 202, empty otherwise, so that a failed
document is picked up again) and, optionally, the *Error URL* of a rejection; and to report
every failed document with ``POST /v2/errors`` so Procuros notifies the customer, possibly
only after some failed rounds (setting ``report_after_failures``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from docrelay import (
    Context,
    Document,
    DocumentError,
    Outcome,
    OutcomeError,
    OutcomeKind,
    TransportFailure,
)

from ._transactions import build_body, document_number, type_for_kind

__all__ = ["ERRORS_PATH", "erp_status", "error_report", "report_failure"]

ERRORS_PATH: Final = "/v2/errors"

log = logging.getLogger("docrelay.procuros")


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


def report_failure(document: Document, outcome: Outcome, ctx: Context) -> None:
    """Post the error report of a failed round once ``report_after_failures`` is reached; a
    report that is refused or cannot be delivered is logged (never the token) and dropped."""
    threshold = int(ctx.setting("report_after_failures", 1))
    if not ctx.setting("report_errors", True) or threshold <= 0 or ctx.failures < threshold:
        log.debug("procuros: %s failed %d time(s); not reported", document.id, ctx.failures)
        return
    report = json.dumps(error_report(document, outcome, ctx), ensure_ascii=False)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    try:
        response = ctx.request(
            "POST", ERRORS_PATH, body=report.encode(), headers=headers, auth=True
        )
    except TransportFailure as exc:
        log.warning("procuros: error report for %s not delivered: %s", document.id, exc.error.kind)
        return
    except OutcomeError as exc:
        log.warning("procuros: error report for %s not sent: %s", document.id, exc.outcome.message)
        return
    if response.status != 201:
        log.warning("procuros: error report for %s answered HTTP %d", document.id, response.status)
        return
    data = response.json()
    url = data.get("errorUrl") if isinstance(data, Mapping) else None
    shown = url if isinstance(url, str) else "no error url"
    log.info("procuros: error of %s reported to Procuros (%s)", document.id, shown)
