"""What did Procuros answer the first time? The lookup of sent transactions.

When the answer to ``POST /v2/transactions`` is lost, the resend is answered 400 "Payload
already received": Procuros has the payload, but that answer does not say whether it was
accepted for forwarding (201, ``TRANSMITTED``) or not (202, ``NO_ACTION``). The OpenAPI
description offers ``GET /v2/all-transactions`` (List All Transactions, operation
``v2_list_all_transactions``) with ``filter[type]``, ``filter[created_between]``, ``cursor``
and ``per_page``; each item carries its ``procurosTransactionId``, ``content`` and a
``TransactionStatus`` (``PENDING``, ``SUCCESS``, ``FAILED``, ``DROPPED``, ``UNKNOWN``).

:func:`find_transaction` searches that list for the document's transaction, and
:func:`forward_decision` reads its status: ``PENDING``/``SUCCESS`` = forwarded
(``TRANSMITTED``), ``DROPPED`` = not forwarded (``NO_ACTION``), anything else = unknown
(settings ``forwarded_statuses`` and ``dropped_statuses``). :func:`confirm` (after "Payload
already received") and :func:`reconciled` (before an ``unknown`` document is sent again) turn
that into an outcome. A lookup that cannot be made or finished says why and decides nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import attrs
from docrelay import (
    Context,
    Document,
    DocumentError,
    Outcome,
    OutcomeError,
    OutcomeKind,
    TransportFailure,
)

from ._classify import DEFAULT_DUPLICATE_MESSAGE, NO_ACTION, TRANSMITTED
from ._transactions import build_body, document_number

__all__ = [
    "DEFAULT_DROPPED_STATUSES",
    "DEFAULT_FORWARDED_STATUSES",
    "LIST_PATH",
    "Lookup",
    "confirm",
    "find_transaction",
    "forward_decision",
    "reconciled",
    "sent_on",
]

log = logging.getLogger("docrelay.procuros")

LIST_PATH: Final = "/v2/all-transactions"
#: Listed statuses that mean Procuros took the transaction for forwarding (the 201).
DEFAULT_FORWARDED_STATUSES: Final = ("PENDING", "SUCCESS")
#: Listed statuses that mean Procuros did not forward it (the 202).
DEFAULT_DROPPED_STATUSES: Final = ("DROPPED",)

_PER_PAGE: Final = 100


@attrs.frozen
class Lookup:
    """The result of one search.

    :ivar transactions: the listed transactions that are this document's (usually one).
    :ivar complete: the whole window was searched (so an empty result means "not there").
    :ivar error: why the search could not be made or finished (never a secret).
    """

    transactions: tuple[Mapping[str, Any], ...] = ()
    complete: bool = False
    error: str | None = None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _statuses(value: Any) -> frozenset[str]:
    return frozenset(v.strip().upper() for v in str(value).split(",") if v.strip())


def sent_on(ctx: Context) -> date:
    """The UTC day the document was first sent (kept in ``ctx.state``), else today."""
    value = ctx.state.get("first_sent_on")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return datetime.now(UTC).date()


def _query(ctx: Context, type_: str) -> dict[str, str]:
    start = sent_on(ctx) - timedelta(days=int(ctx.setting("lookup_days", 30)))
    end = datetime.now(UTC).date() + timedelta(days=1)
    return {
        "filter[type]": type_,
        "filter[created_between]": f"{start.isoformat()},{end.isoformat()}",
        "per_page": str(_PER_PAGE),
    }


def _page(ctx: Context, params: Mapping[str, str]) -> tuple[Mapping[str, Any] | None, str | None]:
    """One page of the list (``(data, None)``), or ``(None, why not)``."""
    try:
        response = ctx.request(
            "GET", LIST_PATH, params=params, auth=True, headers={"Accept": "application/json"}
        )
    except TransportFailure as exc:
        return None, f"the transaction list could not be read ({exc.error.kind})"
    except OutcomeError as exc:
        return None, f"the transaction list could not be read: {exc.outcome.describe()}"
    data = response.json()
    data = data if isinstance(data, Mapping) else {}
    if response.status != 200:
        said = data.get("message")
        detail = f": {said[:200]}" if isinstance(said, str) and said else ""
        return None, f"the transaction list answered HTTP {response.status}{detail}"
    if not isinstance(data.get("items"), list):
        return None, "the transaction list answered 200 without items"
    return data, None


def find_transaction(ctx: Context, body: Mapping[str, Any]) -> Lookup:
    """Search ``GET /v2/all-transactions`` for the transaction of *body* (the sent body).

    The search is bounded: transactions of the body's type created from ``lookup_days``
    before the first send until tomorrow (UTC), at most ``lookup_max_pages`` pages of 100.
    With ``lookup_match = "content"`` (the default) an item is this document's when its
    content equals the sent content (compared as canonical JSON); with ``"document_number"``
    when its document number is the same (the content-equal ones are preferred).
    """
    type_, content = str(body["type"]), body["content"]
    match = str(ctx.setting("lookup_match", "content")).strip().lower()
    if match not in ("content", "document_number"):
        return Lookup(error=f"setting lookup_match must be content or document_number: {match!r}")
    number = document_number(type_, content)
    if match == "document_number" and number is None:
        return Lookup(error=f"a {type_} without a document number cannot be matched by number")
    pages = int(ctx.setting("lookup_max_pages", 10))
    params, wanted = _query(ctx, type_), _canonical(content)
    same_content: list[Mapping[str, Any]] = []
    same_number: list[Mapping[str, Any]] = []
    for _ in range(pages):
        data, error = _page(ctx, params)
        if data is None:
            return Lookup(error=error)
        for item in data["items"]:
            if not isinstance(item, Mapping) or item.get("type") != type_:
                continue
            listed = item.get("content")
            if _canonical(listed) == wanted:
                same_content.append(item)
            elif match == "document_number" and document_number(type_, listed) == number:
                same_number.append(item)
        cursor = data.get("nextCursor")
        if not data.get("hasMore") or not isinstance(cursor, str) or not cursor:
            return Lookup(transactions=tuple(same_content or same_number), complete=True)
        params = {**params, "cursor": cursor}
    found = tuple(same_content or same_number)
    why = None if found else f"not found in the first {pages} pages of the list"
    return Lookup(found, error=why)


def forward_decision(lookup: Lookup, ctx: Context) -> tuple[str | None, Mapping[str, Any] | None]:
    """``(TRANSMITTED | NO_ACTION | None, the transaction)`` from a lookup's result.

    ``None`` when nothing was found, or when the transactions found do not say the same (one
    forwarded, one dropped), or their status means neither (``FAILED``, ``UNKNOWN``).
    """
    if not lookup.transactions:
        return None, None
    forwarded = _statuses(ctx.setting("forwarded_statuses", ",".join(DEFAULT_FORWARDED_STATUSES)))
    dropped = _statuses(ctx.setting("dropped_statuses", ",".join(DEFAULT_DROPPED_STATUSES)))
    decisions: set[str | None] = set()
    for tx in lookup.transactions:
        status = str(tx.get("status") or "").upper()
        if status in forwarded and status not in dropped:
            decisions.add(TRANSMITTED)
        elif status in dropped and status not in forwarded:
            decisions.add(NO_ACTION)
        else:
            decisions.add(None)
    newest = max(lookup.transactions, key=lambda t: str(t.get("createdAt") or ""))
    return (decisions.pop() if len(decisions) == 1 else None), newest


@attrs.frozen
class _Meaning:
    """What a forward decision makes of the document: its kind in ``reconcile`` and after
    "Payload already received", the words for the message, the end of the rule."""

    reconciled: OutcomeKind
    confirmed: OutcomeKind
    words: str
    tag: str


_MEANINGS: Final = {
    TRANSMITTED: _Meaning(OutcomeKind.DELIVERED, OutcomeKind.DUPLICATE,
                          "accepted for forwarding", "transmitted"),
    NO_ACTION: _Meaning(OutcomeKind.NO_ACTION, OutcomeKind.NO_ACTION,
                        "accepted, not forwarded", "no-action"),
}  # fmt: skip


@attrs.frozen
class _Found:
    """What the lookup found for one document, ready to be told."""

    lookup: Lookup
    decision: str | None
    tx: Mapping[str, Any] | None

    @property
    def ref(self) -> str | None:
        ref = self.tx.get("procurosTransactionId") if self.tx is not None else None
        return ref[:200] if isinstance(ref, str) and ref else None

    @property
    def meaning(self) -> _Meaning | None:
        return _MEANINGS.get(self.decision or "")

    def told(self) -> str:
        status = self.tx.get("status") if self.tx is not None else "?"
        said = f"transaction {self.ref} is {status}"
        return f"{said} at Procuros ({self.meaning.words})" if self.meaning else said

    def why_not(self) -> str:
        if self.tx is not None:
            return self.told()
        return self.lookup.error or "no such transaction in the list"


def _look_up(document: Document, ctx: Context) -> _Found:
    try:
        body = build_body(document)
    except DocumentError as exc:
        return _Found(Lookup(error=str(exc)), None, None)
    found = find_transaction(ctx, body)
    decision, tx = forward_decision(found, ctx)
    if tx is not None and isinstance(tx.get("procurosTransactionId"), str):
        ctx.state["procuros_transaction_id"] = tx["procurosTransactionId"]
        ctx.state["procuros_transaction_status"] = str(tx.get("status"))
    return _Found(found, decision, tx)


def _unconfirmed(outcome: Outcome, why: str, ref: str | None = None) -> Outcome:
    said = outcome.message or DEFAULT_DUPLICATE_MESSAGE
    return attrs.evolve(
        outcome,
        message=f"{said}; forward status unknown ({why}): Procuros has the payload, but "
        "whether it forwards it (TRANSMITTED) or not (NO_ACTION) is not confirmed; check the "
        "transaction in the Procuros portal",
        provider_ref=ref or outcome.provider_ref,
        rule="procuros:400-payload-already-received-unconfirmed",
    )


def confirm(outcome: Outcome, document: Document | None, ctx: Context) -> Outcome:
    """After "Payload already received" (*outcome*): what Procuros did with the payload."""
    if not ctx.setting("lookup", True):
        return _unconfirmed(outcome, "lookup switched off")
    if document is None:
        return _unconfirmed(outcome, "no document to look up")
    found = _look_up(document, ctx)
    if found.meaning is not None:
        said = outcome.message or DEFAULT_DUPLICATE_MESSAGE
        return attrs.evolve(
            outcome,
            kind=found.meaning.confirmed,
            provider_status=found.decision,
            provider_ref=found.ref,
            message=f"{said}; {found.told()}",
            rule=f"procuros:400-payload-already-received-{found.meaning.tag}",
        )
    return _unconfirmed(outcome, found.why_not(), found.ref)


def reconciled(document: Document, ctx: Context) -> Outcome | None:
    """The ``reconcile`` answer (see the hook's docstring in the package)."""
    if not ctx.setting("lookup", True):
        return None
    found = _look_up(document, ctx)
    ref = found.ref
    if found.meaning is not None:
        return Outcome(
            found.meaning.reconciled,
            message=found.told(),
            provider_ref=ref,
            provider_status=found.decision,
            rule=f"procuros:reconcile-{found.meaning.tag}",
        )
    if found.tx is not None:
        duplicate_status = ctx.setting("duplicate_status")
        return Outcome(
            OutcomeKind.DUPLICATE,
            message=f"{found.told()} at Procuros; forward status unknown: check the "
            "transaction in the Procuros portal",
            provider_ref=ref,
            provider_status=str(duplicate_status) if duplicate_status else None,
            rule="procuros:reconcile-unconfirmed",
        )
    if found.lookup.complete:
        return Outcome(
            OutcomeKind.RETRY,
            message="the transaction is not in Procuros' list of sent transactions; sending it",
            rule="procuros:reconcile-not-found",
        )
    why = found.lookup.error
    log.info("procuros: lookup of %s not possible (%s); sending again", document.id, why)
    return None
