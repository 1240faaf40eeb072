"""After an ambiguous outcome: did the request take effect at SieSmart? (No idempotency key:
a create is found by the label docrelay derived from the key, an update or a decision by
reading the proposal.)"""

from __future__ import annotations

from typing import Any

import attrs
from docrelay import (
    Context,
    Document,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
)
from docrelay.helpers import json_object

from ._classify import NAME, proposal_id_from
from ._etag import adopt_or_refuse, get_proposal, proposal_id, read, setting, store_etag, trace_of

__all__ = ["DECISION_FIELDS", "lookup_label", "reconcile_create", "reconcile_modification"]

DECISION_FIELDS = (
    "commentToRiskAnalyst",
    "siemensMayContactCustomer",
    "siemensMayRequestCreditData",
    "prelease",
)
_LISTS = ("content", "items", "proposals", "results", "data")


def lookup_label(label: Any, key: str, mode: str, prefix: str = "docrelay-") -> str | None:
    """The label docrelay sends with a create (and searches for in a reconcile).

    Stable for a document revision: it only depends on the document's label and the key.
    """
    tag = f"{prefix}{key}"
    if mode == "off":
        return None
    if mode == "replace" or not label:
        return tag
    text = str(label)
    return text if text.endswith(f"[{tag}]") else f"{text} [{tag}]"


def _search_items(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = next((data[n] for n in _LISTS if isinstance(data.get(n), list)), [])
    return [i for i in data if isinstance(i, dict)] if isinstance(data, list) else []


def _search(ctx: Context, label: str) -> tuple[list[str], HttpResponse]:
    """The ids of the proposals labelled exactly *label*, and the search's answer."""
    params = {str(setting(ctx, "search_label_param")): label}
    path = str(setting(ctx, "search_path"))
    resp = read(ctx, path, "proposal search", f"{NAME}:search-unreachable", params)
    if resp.status != 200:
        outcome = ctx.classify(resp)
        if outcome.kind not in (OutcomeKind.RETRY, OutcomeKind.THROTTLED, OutcomeKind.REAUTH):
            outcome = attrs.evolve(outcome, kind=OutcomeKind.CONFIG_ERROR)
        message, rule = f"proposal search: {outcome.message}", f"{outcome.rule}:search"
        raise OutcomeError(attrs.evolve(outcome, message=message, rule=rule))
    matches = [i for i in _search_items(resp.json()) if i.get("label") == label]
    return [p for p in (proposal_id_from(i) for i in matches) if p], resp


def reconcile_create(document: Document, ctx: Context) -> Outcome | None:
    """Search the create's label: found -> delivered (id and ETag kept), else ``retry``."""
    if not ctx.key:
        return None
    label = ctx.state.get("label") or lookup_label(
        json_object(document).get("label"),
        ctx.key,
        str(setting(ctx, "label_mode")),
        str(setting(ctx, "label_prefix")),
    )
    if not label:
        return None
    ids, found = _search(ctx, str(label))
    if not ids:
        return Outcome(
            kind=OutcomeKind.RETRY,
            status=found.status,
            trace_id=trace_of(ctx, found),
            message=f"no proposal labelled {label!r} at SieSmart: create it again",
            rule=f"{NAME}:reconcile-not-found",
        )
    pid = ids[0]
    got = get_proposal(ctx, pid)
    ctx.state["proposal_id"] = pid
    if etag := got.header("ETag"):
        store_etag(ctx, pid, etag)
    note = f" ({len(ids)} proposals carry that label; took the newest)" if len(ids) > 1 else ""
    return Outcome(
        kind=OutcomeKind.DELIVERED,
        status=got.status,
        message=f"proposal {pid} found by label {label!r}: the create had taken effect{note}",
        provider_ref=pid,
        trace_id=trace_of(ctx, got),
        rule=f"{NAME}:reconcile-found",
    )


def _subset_equal(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(
            _subset_equal(v, theirs.get(k)) for k, v in ours.items()
        )
    return bool(ours == theirs)


def _taken(document: Document, data: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether the proposal shows the document's change (and the decision status)."""
    ours = json_object(document)
    if document.kind != "decision":
        body = {k: v for k, v in ours.items() if k not in ("id", "decision")}
        return _subset_equal(body, data), None
    decision = data.get("decision")
    if not isinstance(decision, dict):
        return False, None
    mine = {k: ours[k] for k in DECISION_FIELDS if k in ours}
    status = decision.get("decisionStatus")
    taken = status not in (None, "NOT_AVAILABLE") and _subset_equal(mine, decision)
    return taken, str(status) if status else None


def reconcile_modification(document: Document, ctx: Context) -> Outcome | None:
    """GET the proposal: delivered when it shows the change, else ``retry`` (or
    ``rejected`` when someone else changed the proposal meanwhile)."""
    pid = ctx.state.get("proposal_id") or proposal_id(document, ctx)
    if not pid:
        return None
    pid = str(pid)
    resp = get_proposal(ctx, pid)
    data = resp.json()
    if not isinstance(data, dict):
        return None
    taken, status = _taken(document, data)
    etag = resp.header("ETag")
    if not taken and etag:
        # Not ours: resending is only safe while nobody else changed the proposal.
        try:
            adopt_or_refuse(ctx, pid, etag, resp)
        except OutcomeError as exc:
            return exc.outcome
    if not taken:
        return Outcome(
            kind=OutcomeKind.RETRY,
            status=resp.status,
            message=f"proposal {pid} does not show this {document.kind}: send it again",
            trace_id=trace_of(ctx, resp),
            rule=f"{NAME}:reconcile-not-found",
        )
    if etag:
        store_etag(ctx, pid, etag)
    return Outcome(
        kind=OutcomeKind.DELIVERED,
        status=resp.status,
        message=f"proposal {pid} already shows this {document.kind}: it had taken effect",
        provider_ref=pid,
        provider_status=status,
        trace_id=trace_of(ctx, resp),
        rule=f"{NAME}:reconcile-found",
    )
