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
(settings ``forwarded_statuses`` and ``dropped_statuses``). Nothing here raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import attrs
from docrelay import Context, Document, DocumentError, OutcomeError, TransportFailure

from ._classify import NO_ACTION, TRANSMITTED
from ._transactions import document_number

__all__ = [
    "DEFAULT_DROPPED_STATUSES",
    "DEFAULT_FORWARDED_STATUSES",
    "LIST_PATH",
    "Lookup",
    "find_transaction",
    "forward_decision",
    "sent_on",
]

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


def _statuses(value: Any, default: tuple[str, ...]) -> frozenset[str]:
    if value is None:
        return frozenset(default)
    items = value.split(",") if isinstance(value, str) else list(value)
    return frozenset(str(v).strip().upper() for v in items if str(v).strip())


def sent_on(ctx: Context) -> date:
    """The UTC day the document was first sent (kept in ``ctx.state``), else today."""
    value = ctx.state.get("first_sent_on")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return datetime.now(UTC).date()


def _int(ctx: Context, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(ctx.setting(name, default))
    except (TypeError, ValueError):
        return default
    return min(high, max(low, value))


def find_transaction(document: Document, ctx: Context, body: Mapping[str, Any]) -> Lookup:
    """Search ``GET /v2/all-transactions`` for the transaction of *body* (the sent body).

    The search is bounded: transactions of the body's type created from ``lookup_days``
    before the first send until tomorrow (UTC), at most ``lookup_max_pages`` pages of 100.
    With ``lookup_match = "content"`` (the default) an item is this document's when its
    content equals the sent content (compared as canonical JSON); with ``"document_number"``
    when its document number is the same (the content-equal ones are preferred).
    """
    from . import _auth_headers  # the plugin's headers (token registered as a secret)

    type_ = str(body["type"])
    content = body["content"]
    match = str(ctx.setting("lookup_match", "content")).strip().lower()
    if match not in ("content", "document_number"):
        return Lookup(error=f"setting lookup_match must be content or document_number: {match!r}")
    number = document_number(type_, content)
    if match == "document_number" and number is None:
        return Lookup(error=f"a {type_} without a document number cannot be matched by number")
    days = _int(ctx, "lookup_days", 30, 0, 3660)
    pages = _int(ctx, "lookup_max_pages", 10, 1, 1000)
    start = sent_on(ctx) - timedelta(days=days)
    end = datetime.now(UTC).date() + timedelta(days=1)
    params = {
        "filter[type]": type_,
        "filter[created_between]": f"{start.isoformat()},{end.isoformat()}",
        "per_page": str(_PER_PAGE),
    }
    wanted = _canonical(content)
    same_content: list[Mapping[str, Any]] = []
    same_number: list[Mapping[str, Any]] = []
    try:
        headers = {"Accept": "application/json", **_auth_headers(ctx)}
        for _ in range(pages):
            response = ctx.request("GET", LIST_PATH, headers=headers, params=params)
            if response.status != 200:
                data = response.json()
                said = data.get("message") if isinstance(data, Mapping) else None
                detail = f": {str(said)[:200]}" if isinstance(said, str) and said else ""
                return Lookup(error=f"the transaction list answered HTTP {response.status}{detail}")
            data = response.json()
            items = data.get("items") if isinstance(data, Mapping) else None
            if not isinstance(items, list):
                return Lookup(error="the transaction list answered 200 without items")
            for item in items:
                if not isinstance(item, Mapping) or item.get("type") != type_:
                    continue
                if _canonical(item.get("content")) == wanted:
                    same_content.append(item)
                elif match == "document_number" and (
                    document_number(type_, item.get("content")) == number
                ):
                    same_number.append(item)
            cursor = data.get("nextCursor") if isinstance(data, Mapping) else None
            if not data.get("hasMore") or not isinstance(cursor, str) or not cursor:
                found = same_content or same_number
                return Lookup(transactions=tuple(found), complete=True)
            params = {**params, "cursor": cursor}
        found = same_content or same_number
        return Lookup(
            transactions=tuple(found),
            error=None if found else f"not found in the first {pages} pages of the list",
        )
    except TransportFailure as exc:
        return Lookup(error=f"the transaction list could not be read ({exc.error.kind})")
    except OutcomeError as exc:
        return Lookup(error=f"the transaction list could not be read: {exc.outcome.describe()}")
    except DocumentError as exc:
        return Lookup(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a lookup never breaks the classification
        return Lookup(error=f"the lookup failed ({type(exc).__name__})")


def forward_decision(lookup: Lookup, ctx: Context) -> tuple[str | None, Mapping[str, Any] | None]:
    """``(TRANSMITTED | NO_ACTION | None, the transaction)`` from a lookup's result.

    ``None`` when nothing was found, or when the transactions found do not say the same (one
    forwarded, one dropped), or their status means neither (``FAILED``, ``UNKNOWN``).
    """
    if not lookup.transactions:
        return None, None
    forwarded = _statuses(ctx.setting("forwarded_statuses"), DEFAULT_FORWARDED_STATUSES)
    dropped = _statuses(ctx.setting("dropped_statuses"), DEFAULT_DROPPED_STATUSES)
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
    if len(decisions) == 1:
        return decisions.pop(), newest
    return None, newest
