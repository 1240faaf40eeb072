"""docrelay provider plugin for SieSmart (Siemens Financial Services introducer proposals).

Document kinds:

- ``proposal``: create a proposal, ``POST /proposals`` (no If-Match), body = the document's
  JSON with a ``label`` docrelay derives from the idempotency key (the lookup key after an
  ambiguous outcome, see :func:`reconcile`).
- ``proposal_update``: ``PUT /proposals/{id}``, body = the document's JSON.
- ``decision``: ``POST /proposals/{id}/decision``, body = ``{commentToRiskAnalyst,
  siemensMayContactCustomer, siemensMayRequestCreditData, prelease}``.

The proposal of the later two is named by metadata ``proposal`` (the docrelay id of the
creating document; the document is held until that one is delivered) or ``proposal_id``.
Every modifying call carries ``If-Match`` with the newest ETag known for the proposal; after
a 412 the proposal is read again (:func:`refresh_resource`, see :mod:`._etag`).

The Auth0 token (JSON body with the audience), its cache and refresh, the generic statuses,
``Retry-After`` and transport errors are docrelay's (``ProviderInfo(auth=...)``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import docrelay
from docrelay import (
    Context,
    Document,
    DocumentError,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    RateLimit,
    Setting,
    TransportError,
)
from docrelay.auth import OAuth2ClientCredentials
from docrelay.helpers import json_object

from . import _etag, _reconcile
from ._classify import NAME, TRACE_HEADER, classify
from ._reconcile import DECISION_FIELDS, lookup_label

if TYPE_CHECKING:
    from ._demo import demo_batch
    from .sandbox import SieSmartSandbox

__all__ = [
    "AUDIENCE",
    "KINDS",
    "TOKEN_URLS",
    "SieSmartSandbox",
    "build_request",
    "classify_response",
    "demo_batch",
    "hold",
    "lookup_label",
    "provider_info",
    "reconcile",
    "refresh_resource",
]

AUDIENCE = "https://api.siesmart.com/b2b"
TOKEN_URLS: Mapping[str, str] = {
    "test": "https://sfs-q-001.siemens-sfs.auth0app.com/oauth/token",
    "production": "https://sfs-p-001.siemens-sfs.auth0app.com/oauth/token",
}
KINDS = ("proposal", "proposal_update", "decision")
MODIFYING_KINDS = ("proposal_update", "decision")
#: ``tuple[Any, ...]``: mypy reads ``Setting(choices=)`` through attrs' ``tuple`` converter
#: as ``Iterable[_T_co]`` and refuses a ``tuple[str, ...]``.
ON_CONFLICT: tuple[Any, ...] = ("reject", "overwrite")

SETTINGS = (
    Setting("client_id", help="Auth0 client id (from Siemens Financial Services)", required=True),
    Setting("client_secret", help="Auth0 client secret", secret=True, required=True),
    Setting("audience", AUDIENCE, help="token audience (the same for test and production)"),
    Setting("token_url", None, type="str", help="token endpoint; default: the Auth0 URL of "
            "environment test/production, else {base_url}/oauth/token (the sandbox)"),
    Setting("proposals_path", "/proposals", help="create: POST; read/update: GET/PUT .../{id}"),
    Setting("decision_path", "/proposals/{id}/decision",
            help="decision submit (assumed path; POST with If-Match)"),
    Setting("search_path", "/proposals/search",
            help="proposal search used to reconcile a create after an ambiguous outcome"),
    Setting("search_label_param", "label",
            help="query parameter of the search that matches the label exactly (assumed)"),
    Setting("label_mode", "suffix", help="how docrelay makes the create's label a lookup key: "
            "'suffix' (keep the document's label, append ' [docrelay-<key>]'), 'replace' "
            "(label = 'docrelay-<key>'), 'off' (no lookup: an ambiguous create is resent)"),
    Setting("label_prefix", "docrelay-", help="prefix of the key in the label"),
    Setting("trace_header", TRACE_HEADER, help="response header with the request id"),
    Setting("on_conflict", "reject", choices=ON_CONFLICT, help="after a 412, when the proposal "
            "changed at SieSmart since the version docrelay knew: 'reject' (the document ends "
            "rejected: review and resubmit) or 'overwrite' (resend with the fresh ETag, "
            "replacing the other change)"),
)  # fmt: skip


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    """SieSmart: an Auth0 token, proposals with ETag/If-Match, no idempotency key."""
    return ProviderInfo(
        name=NAME,
        hook_api=2,
        content_type="application/json",
        # The API base URL of test and production is not public: set base_url.
        environments={"sandbox": "http://127.0.0.1:8703"},
        default_environment="sandbox",
        auth=OAuth2ClientCredentials(
            token_urls=TOKEN_URLS,
            token_path="/oauth/token",  # noqa: S106 - a path; the sandbox (on the base URL)
            body="json",  # Auth0: {audience, grant_type, client_id, client_secret}
            extra={"audience": AUDIENCE},
            extra_settings={"audience": "audience"},  # the setting, when set, wins
            expires_in=86400,  # "valid for 24 hours" (seed 002)
            margin=0.0,  # as before: docrelay's token cache renews it 30 s before expiry
        ),
        request_id_header=TRACE_HEADER,
        kinds=KINDS,
        max_payload_bytes=None,
        rate_limit=RateLimit(100, 60),
        rate_limit_scope="host",  # "100 requests per minute ... at the connecting IP" (seed 002)
        idempotency="none",
        async_validation="none",
        settings=SETTINGS,
        credential_setting="client_id",
        # The Auth0 token servers of test and production (used when token_url is not set).
        extra_hosts=tuple(sorted({str(urlsplit(u).hostname) for u in TOKEN_URLS.values()})),
        sandbox="docrelay_siesmart.sandbox:SieSmartSandbox",
        demo="docrelay_siesmart._demo:demo_batch",
    )


@docrelay.hookimpl
def hold(document: Document, ctx: Context) -> str | None:
    """Hold an update/decision until its creating proposal (and ``after``) is delivered."""
    if document.kind not in MODIFYING_KINDS:
        return None
    waits: list[str] = []
    ref = document.metadata.get("proposal")
    if ref and not document.metadata.get("proposal_id"):
        view = _etag.creating_view(ctx, ref)
        if view is None:
            waits.append(f"waiting for proposal document {ref} (not submitted yet)")
        elif view.state not in _etag.DELIVERED_STATES or not view.provider_ref:
            waits.append(f"waiting for proposal document {ref} to be delivered (now {view.state})")
    if after := document.metadata.get("after"):
        other = ctx.get_document(after)
        if other is None:
            waits.append(f"waiting for document {after} (not submitted yet)")
        elif other.state not in (*_etag.DELIVERED_STATES, "no_action"):
            waits.append(f"waiting for document {after} to be delivered (now {other.state})")
    return "; ".join(waits) or None


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """A create without If-Match; an update or a decision with the newest known ETag."""
    if document.kind not in KINDS:
        raise DocumentError(
            f"siesmart does not know document kind {document.kind!r} (known: {', '.join(KINDS)})"
        )
    _etag.on_conflict(ctx)
    data = json_object(document)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    proposals = str(_etag.setting(ctx, "proposals_path")).rstrip("/")
    if document.kind == "proposal":
        mode, prefix = _etag.setting(ctx, "label_mode"), _etag.setting(ctx, "label_prefix")
        label = (
            lookup_label(data.get("label"), ctx.key, str(mode), str(prefix)) if ctx.key else None
        )
        if label is not None:
            data["label"] = ctx.state["label"] = label
        return HttpRequest("POST", proposals, body=json.dumps(data).encode(), headers=headers)
    pid = _etag.proposal_id(document, ctx)
    if pid is None:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"proposal document {document.metadata.get('proposal')} "
                "is not delivered yet",
                rule=f"{NAME}:proposal-not-delivered",
            )
        )
    if ctx.state.get("proposal_id") not in (None, pid):
        for name in ("etag", "etag_at", "based_on", "conflict_etag", "needs_refresh"):
            ctx.state.pop(name, None)
    ctx.state["proposal_id"] = pid
    headers["If-Match"] = _etag.if_match(ctx, pid)
    if document.kind == "proposal_update":
        body = {k: v for k, v in data.items() if k not in ("id", "decision")}
        return HttpRequest("PUT", f"{proposals}/{pid}", body=json.dumps(body).encode(),
                           headers=headers)  # fmt: skip
    body = {k: data[k] for k in DECISION_FIELDS if k in data}
    path = str(_etag.setting(ctx, "decision_path")).replace("{id}", pid)
    return HttpRequest("POST", path, body=json.dumps(body).encode(), headers=headers)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None,
    error: TransportError | None,
    ctx: Context,
    document: Document | None,
) -> Outcome | None:
    """SieSmart's own answers (the table is in :mod:`._classify`); a success's ETag and
    proposal id are kept in ``ctx.state``. ``None`` leaves the rest to docrelay."""
    if response is None:
        return None
    kind = document.kind if document is not None else None
    outcome = classify(response, kind=kind, trace_header=str(_etag.setting(ctx, "trace_header")))
    pid = (outcome.provider_ref if outcome else None) or ctx.state.get("proposal_id")
    if outcome is None or not pid or not 200 <= response.status < 300:
        return outcome
    if etag := response.header("ETag"):
        _etag.store_etag(ctx, str(pid), etag)
    if outcome.provider_ref is None and kind in MODIFYING_KINDS:
        return attrs.evolve(outcome, provider_ref=str(pid))
    return outcome


@docrelay.hookimpl
def refresh_resource(document: Document, ctx: Context) -> bool:
    """After a 412: GET the proposal; keep its current ETag for the next attempt, or end the
    round ``rejected`` when it changed at SieSmart since docrelay's version (the setting
    ``on_conflict``)."""
    if document.kind not in MODIFYING_KINDS:
        return False
    pid = ctx.state.get("proposal_id") or _etag.proposal_id(document, ctx)
    if not pid:
        return False
    try:
        fresh, resp = _etag.read_etag(ctx, str(pid))
    except OutcomeError as exc:
        if exc.outcome.kind in (OutcomeKind.REJECTED, OutcomeKind.CONFIG_ERROR):
            return False
        # The re-read failed for a passing reason: the next attempt reads the proposal
        # first (build_request), and a failure there is an ordinary retry.
        ctx.state.update(proposal_id=str(pid), needs_refresh=True)
        return True
    _etag.adopt_or_refuse(ctx, str(pid), fresh, resp)
    return True


@docrelay.hookimpl
def reconcile(document: Document, ctx: Context) -> Outcome | None:
    """After an ambiguous outcome: did the request take effect at SieSmart?

    - ``proposal``: search ``GET /proposals/search?label=<label>`` for the label derived
      from the idempotency key; found -> delivered (proposal id and ETag kept), not found ->
      ``retry`` (create again).
    - ``proposal_update``: GET the proposal; delivered when it already holds every field
      the document sets, else ``retry``.
    - ``decision``: GET the proposal; delivered when its ``decision`` was requested with the
      document's values, else ``retry``.
    """
    if document.kind == "proposal":
        return _reconcile.reconcile_create(document, ctx)
    if document.kind in MODIFYING_KINDS:
        return _reconcile.reconcile_modification(document, ctx)
    return None


#: Imported at first use, not when the plugin is loaded to send (the sandbox, and what it
#: pulls in, is needed only by ``docrelay sandbox``, ``docrelay demo`` and the contract kit).
_LAZY = {"demo_batch": "._demo", "SieSmartSandbox": ".sandbox"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
