"""ETag / If-Match: which version of a proposal a modifying call is based on, and what a 412
means (someone else changed the proposal, or nobody did and the If-Match got lost).

Kept in the document's provider state: ``proposal_id``, ``etag`` and ``etag_at`` (the newest
version this document knows), ``based_on`` (the version an attempt was based on; unset when
docrelay knew none and read the proposal just for the If-Match), ``conflict_etag`` (the
version found after a conflict: the next round is sent against it), ``needs_refresh`` (the
re-read after a 412 failed: the next attempt reads first).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs
from docrelay import (
    Context,
    Document,
    DocumentError,
    DocumentView,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    TransportFailure,
)

from ._classify import NAME, error_object, trace_id_from

__all__ = [
    "DELIVERED_STATES",
    "adopt_or_refuse",
    "creating_view",
    "get_proposal",
    "if_match",
    "proposal_id",
    "read",
    "read_etag",
    "setting",
    "store_etag",
    "trace_of",
]

DELIVERED_STATES = ("delivered", "duplicate")


def setting(ctx: Context, name: str) -> Any:
    """A setting, with the plugin's default when the context has none."""
    default = ctx.provider.setting(name)
    return ctx.setting(name, default.default if default is not None else None)


def trace_of(ctx: Context, response: HttpResponse) -> str | None:
    """The trace id of an answer (header, else the Error object)."""
    return trace_id_from(response, error_object(response), str(setting(ctx, "trace_header")))


def creating_view(ctx: Context, ref: str) -> DocumentView | None:
    """The docrelay document that creates the proposal (metadata ``proposal``)."""
    view = ctx.get_document(ref)
    return view if view is not None and view.kind == "proposal" else None


def proposal_id(document: Document, ctx: Context) -> str | None:
    """The SieSmart id of the proposal a proposal_update/decision is about (``None`` while
    the creating document is not delivered)."""
    if direct := document.metadata.get("proposal_id"):
        return direct
    ref = document.metadata.get("proposal")
    if not ref:
        raise DocumentError(
            f"{document.kind} {document.id}: set metadata 'proposal' (the docrelay id of the "
            "document that created the proposal) or 'proposal_id'"
        )
    view = creating_view(ctx, ref)
    if view is None or view.state not in DELIVERED_STATES or not view.provider_ref:
        return None
    return view.provider_ref


def store_etag(ctx: Context, pid: str, etag: str) -> None:
    ctx.state.pop("needs_refresh", None)
    ctx.state.update(proposal_id=pid, etag=etag, etag_at=time.time())


def _known(ctx: Context, pid: str) -> list[tuple[float, str]]:
    """(when, ETag) of this document and of docrelay's other documents about *pid*."""
    known: list[tuple[float, str]] = []
    if ctx.state.get("proposal_id") == pid and ctx.state.get("etag"):
        known.append((float(ctx.state.get("etag_at") or 0.0), str(ctx.state["etag"])))
    own = ctx.document.id if ctx.document is not None else None
    for v in ctx.find_documents():
        state = v.provider_state or {}
        if v.id == own or not state.get("etag"):
            continue
        if v.provider_ref == pid or state.get("proposal_id") == pid:
            try:
                when = float(state.get("etag_at") or v.updated_at)
            except (TypeError, ValueError):
                when = float(v.updated_at)
            known.append((when, str(state["etag"])))
    return known


def read(
    ctx: Context, path: str, what: str, rule: str, params: Mapping[str, str] | None = None
) -> HttpResponse:
    """An authorised ``GET``; no answer at all is a ``retry`` naming *what* failed."""
    try:
        return ctx.request("GET", path, params=params, auth=True)
    except TransportFailure as exc:
        message = f"{what} failed ({exc.error.kind})"
        raise OutcomeError(Outcome(kind=OutcomeKind.RETRY, message=message, rule=rule)) from None


def get_proposal(ctx: Context, pid: str) -> HttpResponse:
    """GET the proposal; raises :class:`OutcomeError` when it cannot be read."""
    path = f"{str(setting(ctx, 'proposals_path')).rstrip('/')}/{pid}"
    resp = read(ctx, path, f"reading proposal {pid}", f"{NAME}:get-unreachable")
    if resp.status == 200:
        return resp
    outcome = ctx.classify(resp)
    if outcome.kind is OutcomeKind.REJECTED and resp.status == 404:
        outcome = attrs.evolve(outcome, message=f"proposal {pid}: {outcome.message}")
    elif outcome.kind not in (
        OutcomeKind.RETRY, OutcomeKind.THROTTLED, OutcomeKind.REAUTH, OutcomeKind.CONFIG_ERROR,
    ):  # fmt: skip
        outcome = attrs.evolve(outcome, kind=OutcomeKind.CONFIG_ERROR)
    raise OutcomeError(attrs.evolve(outcome, rule=f"{outcome.rule}:get-proposal"))


def read_etag(ctx: Context, pid: str) -> tuple[str, HttpResponse]:
    """GET the proposal's current ETag (not stored)."""
    resp = get_proposal(ctx, pid)
    etag = resp.header("ETag")
    if not etag:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                status=resp.status,
                message=f"GET proposal {pid} answered without an ETag header",
                rule=f"{NAME}:get-no-etag",
            )
        )
    return etag, resp


def on_conflict(ctx: Context) -> str:
    value = str(setting(ctx, "on_conflict") or "").strip().lower()
    if value not in ("reject", "overwrite"):
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                message=f"siesmart: on_conflict must be 'reject' or 'overwrite', "
                f"not {str(setting(ctx, 'on_conflict'))[:40]!r}",
                rule=f"{NAME}:bad-on-conflict",
            )
        )
    return value


def adopt_or_refuse(ctx: Context, pid: str, fresh: str, resp: HttpResponse | None) -> None:
    """After a 412: keep *fresh* for the next attempt, or end the round ``rejected`` when the
    proposal changed at SieSmart since the version this document was based on.

    No conflict when docrelay knew no version (``based_on`` unset), when the proposal is
    still at that version (the If-Match was missing or lost), when the current version is
    one docrelay's own documents wrote or read, or when ``on_conflict = "overwrite"``.
    """
    based_on = ctx.state.get("based_on")
    seen = {etag for _when, etag in _known(ctx, pid)}
    if on_conflict(ctx) == "overwrite" or not based_on or fresh == based_on or fresh in seen:
        store_etag(ctx, pid, fresh)
        return
    # Not adopted as a known version: other documents about the proposal must not be sent
    # on it either. A later round of this document (a resubmitted revision, a requeue) is
    # sent against it: the operator was asked to review the proposal as it is now.
    ctx.state.pop("needs_refresh", None)
    ctx.state["conflict_etag"] = fresh
    raise OutcomeError(
        Outcome(
            kind=OutcomeKind.REJECTED,
            status=412,
            message=f"proposal {pid} changed at SieSmart since {based_on}: review and resubmit",
            provider_ref=pid,
            trace_id=trace_of(ctx, resp) if resp is not None else None,
            rule=f"{NAME}:changed-at-siesmart",
        )
    )


def if_match(ctx: Context, pid: str) -> str:
    """The ETag for this attempt; ``based_on`` keeps the version docrelay knew before it."""
    if ctx.state.get("needs_refresh"):
        # The re-read after a 412 failed last time: read now, with the same conflict check.
        fresh, resp = read_etag(ctx, pid)
        adopt_or_refuse(ctx, pid, fresh, resp)
        etag: str | None = fresh
    elif ctx.state.get("conflict_etag"):
        # A new round after a conflict (resubmitted or requeued): the reviewed version.
        etag = str(ctx.state.pop("conflict_etag"))
        store_etag(ctx, pid, etag)
    else:
        known = _known(ctx, pid)
        etag = max(known, key=lambda k: k[0])[1] if known else None
    if etag:
        ctx.state["based_on"] = etag
    else:
        # docrelay never knew a version of this proposal: read one.
        ctx.state.pop("based_on", None)
        etag, _resp = read_etag(ctx, pid)
        store_etag(ctx, pid, etag)
    ctx.state["sent_if_match"] = etag
    return etag
