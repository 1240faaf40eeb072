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
Every modifying call carries ``If-Match`` with the newest ETag known for the proposal.

After a 412 the proposal is read again (:func:`refresh_resource`). When it changed at SieSmart
since the version docrelay last knew (``based_on`` in the document's provider state), the
document ends ``rejected`` ("changed at SieSmart since <ETag>: review and resubmit") instead
of being resent over someone else's edit, unless the setting ``on_conflict`` is
``"overwrite"``. A 412 without such a change (the If-Match got lost, or docrelay never knew a
version) is retried with the fresh ETag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

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
    RateLimit,
    Setting,
    Token,
    TransportError,
    TransportFailure,
)

from ._classify import classify, proposal_id_from

if TYPE_CHECKING:
    from docrelay.sandbox import Sandbox

__all__ = [
    "AUDIENCE",
    "KINDS",
    "TOKEN_URLS",
    "build_request",
    "classify_response",
    "demo_batch",
    "hold",
    "prepare_headers",
    "provider_info",
    "provider_sandbox",
    "reconcile",
    "refresh_resource",
]

NAME = "siesmart"
AUDIENCE = "https://api.siesmart.com/b2b"
TOKEN_URLS: Mapping[str, str] = {
    "test": "https://sfs-q-001.siemens-sfs.auth0app.com/oauth/token",
    "production": "https://sfs-p-001.siemens-sfs.auth0app.com/oauth/token",
}
KINDS = ("proposal", "proposal_update", "decision")
MODIFYING_KINDS = ("proposal_update", "decision")
DECISION_FIELDS = (
    "commentToRiskAnalyst",
    "siemensMayContactCustomer",
    "siemensMayRequestCreditData",
    "prelease",
)
_DELIVERED_STATES = ("delivered", "duplicate")
ON_CONFLICT = ("reject", "overwrite")

SETTINGS = (
    Setting("client_id", help="Auth0 client id (from Siemens Financial Services)", required=True),
    Setting("client_secret", help="Auth0 client secret", secret=True, required=True),
    Setting("audience", AUDIENCE, help="token audience (the same for test and production)"),
    Setting(
        "token_url",
        None,
        type="str",
        help="token endpoint; default: the Auth0 URL of environment test/production, "
        "else {base_url}/oauth/token (the sandbox)",
    ),
    Setting("proposals_path", "/proposals", help="create: POST; read/update: GET/PUT .../{id}"),
    Setting(
        "decision_path",
        "/proposals/{id}/decision",
        help="decision submit (assumed path; POST with If-Match)",
    ),
    Setting(
        "search_path",
        "/proposals/search",
        help="proposal search used to reconcile a create after an ambiguous outcome",
    ),
    Setting(
        "search_label_param",
        "label",
        help="query parameter of the search that matches the label exactly (assumed)",
    ),
    Setting(
        "label_mode",
        "suffix",
        help="how docrelay makes the create's label a lookup key: 'suffix' (keep the "
        "document's label, append ' [docrelay-<key>]'), 'replace' (label = "
        "'docrelay-<key>'), 'off' (no lookup: an ambiguous create is resent)",
    ),
    Setting("label_prefix", "docrelay-", help="prefix of the key in the label"),
    Setting("trace_header", "X-B2B-TRACE-ID", help="response header with the request id"),
    Setting(
        "on_conflict",
        "reject",
        choices=("reject", "overwrite"),
        help="after a 412, when the proposal changed at SieSmart since the version docrelay "
        "knew: 'reject' (the document ends rejected: review and resubmit) or 'overwrite' "
        "(resend with the fresh ETag, replacing the other change)",
    ),
)


# ---------------------------------------------------------------------------------------------
# Declaration
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name=NAME,
        content_type="application/json",
        title="SieSmart (Siemens Financial Services introducer proposals)",
        # The API base URL of test and production is not public: set base_url.
        environments={"sandbox": "http://127.0.0.1:8703"},
        default_environment="sandbox",
        auth="oauth2-client-credentials",
        kinds=KINDS,
        max_payload_bytes=None,
        rate_limit=RateLimit(100, 60),
        rate_limit_scope="host",  # "100 requests per minute ... at the connecting IP" (seed 002)
        idempotency="none",
        async_validation="none",
        settings=SETTINGS,
        credential_setting="client_id",
        docs_url="https://developer.siemens.com/siesmart/get-started/index.html",
        # The Auth0 token servers of test and production (used when token_url is not set).
        extra_hosts=tuple(sorted({str(urlsplit(u).hostname) for u in TOKEN_URLS.values()})),
    )


@docrelay.hookimpl
def provider_sandbox() -> type[Sandbox]:
    from .sandbox import SieSmartSandbox

    return SieSmartSandbox


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _setting(ctx: Context, name: str) -> Any:
    s = next((s for s in SETTINGS if s.name == name), None)
    return ctx.setting(name, s.default if s else None)


def _token_url(ctx: Context) -> str:
    url = _setting(ctx, "token_url")
    if url:
        return str(url)
    env = ctx.environment
    if env is not None and env in TOKEN_URLS:
        return TOKEN_URLS[env]
    return ctx.url("/oauth/token")


def _fetch_token(ctx: Context) -> Token:
    """Auth0 client credentials: POST {token_url} with a JSON body."""
    client_id = str(_setting(ctx, "client_id") or "")
    secret = _setting(ctx, "client_secret")
    if not client_id or not secret:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                message="siesmart needs the settings client_id and client_secret",
                rule="siesmart:token-no-credentials",
            )
        )
    ctx.secret(str(secret))
    body = json.dumps(
        {
            "audience": _setting(ctx, "audience"),
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": str(secret),
        }
    ).encode()
    try:
        resp = ctx.request(
            "POST", _token_url(ctx), body=body, headers={"Content-Type": "application/json"}
        )
    except TransportFailure as exc:
        if exc.error.kind == "invalid_url":
            raise OutcomeError(
                Outcome(
                    kind=OutcomeKind.CONFIG_ERROR,
                    message=f"token endpoint refused by docrelay ({exc.error.message}); set "
                    "the token_url setting explicitly",
                    rule="siesmart:token-url-refused",
                )
            ) from None
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"token endpoint unreachable ({exc.error.kind})",
                rule="siesmart:token-unreachable",
            )
        ) from None
    data = resp.json()
    if resp.status == 200 and isinstance(data, dict) and data.get("access_token"):
        try:
            expires_in = float(data.get("expires_in") or 86400)
        except (TypeError, ValueError):
            expires_in = 86400.0
        return Token.from_expires_in(str(data["access_token"]), expires_in)
    words = None
    if isinstance(data, dict):
        words = data.get("error_description") or data.get("message") or data.get("error")
    words = " ".join(str(words or f"HTTP {resp.status}").split())[:300]
    if resp.status == 429 or resp.status >= 500 or resp.status == 200:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                status=resp.status,
                message=f"token endpoint: {words}",
                rule="siesmart:token-unavailable",
            )
        )
    raise OutcomeError(
        Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            status=resp.status,
            message=f"token endpoint refused the client credentials: {words}",
            rule="siesmart:token-refused",
        )
    )


def _auth_headers(ctx: Context) -> dict[str, str]:
    client_id = str(_setting(ctx, "client_id") or "")
    token = ctx.token(client_id, _fetch_token)
    return {"Authorization": f"Bearer {token}"}


def _document_json(document: Document) -> dict[str, Any]:
    try:
        data = document.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(
            f"{document.kind} {document.id}: the payload is not JSON ({exc.__class__.__name__})"
        ) from None
    if not isinstance(data, dict):
        raise DocumentError(f"{document.kind} {document.id}: the payload must be a JSON object")
    return data


def lookup_label(label: Any, key: str, mode: str, prefix: str = "docrelay-") -> str | None:
    """The label docrelay sends with a create (and searches for in :func:`reconcile`).

    Stable for a document revision: it only depends on the document's label and the key.
    """
    tag = f"{prefix}{key}"
    if mode == "off":
        return None
    if mode == "replace" or not label:
        return tag
    text = str(label)
    if text.endswith(f"[{tag}]"):
        return text
    return f"{text} [{tag}]"


def _creating_view(ctx: Context, ref: str) -> docrelay.DocumentView | None:
    for v in ctx.find_documents(kind="proposal"):
        if v.id == ref:
            return v
    return None


def _proposal_id(document: Document, ctx: Context) -> str | None:
    """The SieSmart id of the proposal a proposal_update/decision is about."""
    direct = document.metadata.get("proposal_id")
    if direct:
        return direct
    ref = document.metadata.get("proposal")
    if not ref:
        raise DocumentError(
            f"{document.kind} {document.id}: set metadata 'proposal' (the docrelay id of the "
            "document that created the proposal) or 'proposal_id'"
        )
    view = _creating_view(ctx, ref)
    if view is None or view.state not in _DELIVERED_STATES or not view.provider_ref:
        return None
    return view.provider_ref


def _store_etag(ctx: Context, pid: str, etag: str) -> None:
    ctx.state.pop("needs_refresh", None)
    ctx.state["proposal_id"] = pid
    ctx.state["etag"] = etag
    ctx.state["etag_at"] = time.time()


def _newest_known_etag(ctx: Context, pid: str) -> str | None:
    """This document's ETag or another document's about the same proposal, the newest."""
    candidates: list[tuple[float, str]] = []
    if ctx.state.get("proposal_id") == pid and ctx.state.get("etag"):
        candidates.append((float(ctx.state.get("etag_at") or 0.0), str(ctx.state["etag"])))
    own = ctx.document.id if ctx.document is not None else None
    for v in ctx.find_documents():
        if v.id == own:
            continue
        state = v.provider_state or {}
        about = v.provider_ref == pid or state.get("proposal_id") == pid
        etag = state.get("etag")
        if not about or not etag:
            continue
        at = state.get("etag_at")
        try:
            when = float(at) if at is not None else float(v.updated_at)
        except (TypeError, ValueError):
            when = float(v.updated_at)
        candidates.append((when, str(etag)))
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


def _get_proposal(ctx: Context, pid: str) -> tuple[HttpResponse, Any]:
    """GET the proposal; raises :class:`OutcomeError` when it cannot be read."""
    path = f"{str(_setting(ctx, 'proposals_path')).rstrip('/')}/{pid}"
    try:
        resp = ctx.request("GET", path, headers=_auth_headers(ctx))
    except TransportFailure as exc:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"reading proposal {pid} failed ({exc.error.kind})",
                rule="siesmart:get-unreachable",
            )
        ) from None
    if resp.status != 200:
        outcome = classify(resp, None, kind="lookup", trace_header=_setting(ctx, "trace_header"))
        if outcome.kind is OutcomeKind.REJECTED and resp.status == 404:
            outcome = attrs.evolve(outcome, message=f"proposal {pid}: {outcome.message}")
        elif outcome.kind not in (
            OutcomeKind.RETRY,
            OutcomeKind.THROTTLED,
            OutcomeKind.REAUTH,
            OutcomeKind.CONFIG_ERROR,
        ):
            outcome = attrs.evolve(outcome, kind=OutcomeKind.CONFIG_ERROR)
        raise OutcomeError(attrs.evolve(outcome, rule=f"{outcome.rule}:get-proposal"))
    return resp, resp.json()


def _read_etag(ctx: Context, pid: str) -> tuple[str, HttpResponse]:
    """GET the proposal's current ETag (not stored)."""
    resp, _data = _get_proposal(ctx, pid)
    etag = resp.header("ETag")
    if not etag:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                status=resp.status,
                message=f"GET proposal {pid} answered without an ETag header",
                rule="siesmart:get-no-etag",
            )
        )
    return etag, resp


def _refresh_etag(ctx: Context, pid: str) -> str:
    etag, _resp = _read_etag(ctx, pid)
    _store_etag(ctx, pid, etag)
    return etag


def _on_conflict(ctx: Context) -> str:
    value = str(_setting(ctx, "on_conflict") or "").strip().lower()
    if value not in ON_CONFLICT:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                message=f"siesmart: on_conflict must be 'reject' or 'overwrite', "
                f"not {str(_setting(ctx, 'on_conflict'))[:40]!r}",
                rule="siesmart:bad-on-conflict",
            )
        )
    return value


def _seen_by_docrelay(ctx: Context, pid: str) -> set[str]:
    """Every ETag of the proposal that docrelay's documents hold (their own writes/reads)."""
    seen: set[str] = set()
    if ctx.state.get("proposal_id") == pid and ctx.state.get("etag"):
        seen.add(str(ctx.state["etag"]))
    own = ctx.document.id if ctx.document is not None else None
    for v in ctx.find_documents():
        if v.id == own:
            continue
        state = v.provider_state or {}
        if (v.provider_ref == pid or state.get("proposal_id") == pid) and state.get("etag"):
            seen.add(str(state["etag"]))
    return seen


def _adopt_or_refuse(ctx: Context, pid: str, fresh: str, resp: HttpResponse | None) -> None:
    """After a 412: keep *fresh* for the next attempt, or end the round when the proposal
    changed at SieSmart since the version this document was based on.

    No conflict when docrelay knew no version (``based_on`` unset), when the proposal is
    still at that version (the If-Match was missing or lost), when the current version is
    one docrelay's own documents wrote or read, or when ``on_conflict = "overwrite"``.
    """
    based_on = ctx.state.get("based_on")
    if (
        _on_conflict(ctx) == "overwrite"
        or not based_on
        or fresh == based_on
        or fresh in _seen_by_docrelay(ctx, pid)
    ):
        _store_etag(ctx, pid, fresh)
        return
    # Not adopted as a known version: other documents about the proposal must not be sent
    # on it either. A later round of this document (a resubmitted revision, a requeue) is
    # sent against it: the operator was asked to review the proposal as it is now.
    ctx.state.pop("needs_refresh", None)
    ctx.state["conflict_etag"] = fresh
    trace = None
    if resp is not None:
        trace = classify(resp, None, trace_header=str(_setting(ctx, "trace_header"))).trace_id
    raise OutcomeError(
        Outcome(
            kind=OutcomeKind.REJECTED,
            status=412,
            message=f"proposal {pid} changed at SieSmart since {based_on}: review and resubmit",
            provider_ref=pid,
            trace_id=trace,
            rule="siesmart:changed-at-siesmart",
        )
    )


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def hold(document: Document, ctx: Context) -> str | None:
    """Hold an update/decision until its creating proposal (and ``after``) is delivered."""
    if document.kind not in MODIFYING_KINDS:
        return None
    waits: list[str] = []
    ref = document.metadata.get("proposal")
    if ref and not document.metadata.get("proposal_id"):
        view = _creating_view(ctx, ref)
        if view is None:
            waits.append(f"waiting for proposal document {ref} (not submitted yet)")
        elif view.state not in _DELIVERED_STATES or not view.provider_ref:
            waits.append(f"waiting for proposal document {ref} to be delivered (now {view.state})")
    after = document.metadata.get("after")
    if after:
        views = [v for v in ctx.find_documents() if v.id == after]
        if not views:
            waits.append(f"waiting for document {after} (not submitted yet)")
        elif views[0].state not in (*_DELIVERED_STATES, "no_action"):
            waits.append(f"waiting for document {after} to be delivered (now {views[0].state})")
    return "; ".join(waits) or None


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    if document.kind not in KINDS:
        raise DocumentError(
            f"siesmart does not know document kind {document.kind!r} (known: {', '.join(KINDS)})"
        )
    _on_conflict(ctx)
    data = _document_json(document)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    proposals = str(_setting(ctx, "proposals_path")).rstrip("/")
    if document.kind == "proposal":
        if ctx.key:
            label = lookup_label(
                data.get("label"),
                ctx.key,
                str(_setting(ctx, "label_mode")),
                str(_setting(ctx, "label_prefix")),
            )
            if label is not None:
                data["label"] = label
                ctx.state["label"] = label
        return HttpRequest("POST", proposals, body=json.dumps(data).encode(), headers=headers)
    pid = _proposal_id(document, ctx)
    if pid is None:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"proposal document {document.metadata.get('proposal')} "
                "is not delivered yet",
                rule="siesmart:proposal-not-delivered",
            )
        )
    if ctx.state.get("proposal_id") not in (None, pid):
        for name in ("etag", "etag_at", "based_on", "conflict_etag", "needs_refresh"):
            ctx.state.pop(name, None)
    ctx.state["proposal_id"] = pid
    if document.kind == "proposal_update":
        body = {k: v for k, v in data.items() if k not in ("id", "decision")}
        return HttpRequest(
            "PUT", f"{proposals}/{pid}", body=json.dumps(body).encode(), headers=headers
        )
    body = {k: data[k] for k in DECISION_FIELDS if k in data}
    path = str(_setting(ctx, "decision_path")).replace("{id}", pid)
    return HttpRequest("POST", path, body=json.dumps(body).encode(), headers=headers)


def _is_modifying(request: HttpRequest, ctx: Context) -> bool:
    if ctx.document is not None:
        return ctx.document.kind in MODIFYING_KINDS
    return request.method.upper() not in ("GET", "HEAD") and not request.url.rstrip("/").endswith(
        str(_setting(ctx, "proposals_path")).rstrip("/")
    )


@docrelay.hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str]:
    headers = _auth_headers(ctx)
    if _is_modifying(request, ctx):
        pid = ctx.state.get("proposal_id")
        if pid:
            headers["If-Match"] = _if_match(ctx, str(pid))
    return headers


def _if_match(ctx: Context, pid: str) -> str:
    """The ETag for this attempt; ``based_on`` keeps the version docrelay knew before it."""
    if ctx.state.get("needs_refresh"):
        # The re-read after a 412 failed last time: read now, with the same conflict check.
        fresh, resp = _read_etag(ctx, pid)
        _adopt_or_refuse(ctx, pid, fresh, resp)
        etag: str | None = fresh
    elif ctx.state.get("conflict_etag"):
        # A new round after a conflict (resubmitted or requeued): the reviewed version.
        etag = str(ctx.state.pop("conflict_etag"))
        _store_etag(ctx, pid, etag)
    else:
        etag = _newest_known_etag(ctx, pid)
    if etag:
        ctx.state["based_on"] = etag
    else:
        # docrelay never knew a version of this proposal: read one.
        ctx.state.pop("based_on", None)
        etag = _refresh_etag(ctx, pid)
    ctx.state["sent_if_match"] = etag
    return etag


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome:
    kind = ctx.document.kind if ctx.document is not None else None
    outcome = classify(response, error, kind=kind, trace_header=str(_setting(ctx, "trace_header")))
    try:
        return _after_classify(outcome, response, kind, ctx)
    except Exception:  # noqa: BLE001 - the classifier must never raise
        return outcome


def _after_classify(
    outcome: Outcome, response: HttpResponse | None, kind: str | None, ctx: Context
) -> Outcome:
    """Keep the ETag and the proposal id of a successful answer in ``ctx.state``.

    A second 412 in a row is turned into ``rejected`` by the engine (one refresh per round).
    """
    pid = outcome.provider_ref or ctx.state.get("proposal_id")
    if response is not None and 200 <= response.status < 300:
        etag = response.header("ETag")
        if pid and etag:
            _store_etag(ctx, str(pid), etag)
        if pid and outcome.provider_ref is None and kind in MODIFYING_KINDS:
            outcome = attrs.evolve(outcome, provider_ref=str(pid))
    return outcome


# ---------------------------------------------------------------------------------------------
# After the send
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def refresh_resource(document: Document, ctx: Context) -> bool:
    """After a 412: GET the proposal; keep its current ETag for the next attempt, or end the
    round ``rejected`` when it changed at SieSmart since docrelay's version (see
    :func:`_adopt_or_refuse` and the setting ``on_conflict``)."""
    if document.kind not in MODIFYING_KINDS:
        return False
    pid = ctx.state.get("proposal_id") or _proposal_id(document, ctx)
    if not pid:
        return False
    try:
        fresh, resp = _read_etag(ctx, str(pid))
    except OutcomeError as exc:
        if exc.outcome.kind in (OutcomeKind.REJECTED, OutcomeKind.CONFIG_ERROR):
            return False
        # The re-read failed for a passing reason: the next attempt reads the proposal
        # first (prepare_headers), and a failure there is an ordinary retry.
        ctx.state["proposal_id"] = str(pid)
        ctx.state["needs_refresh"] = True
        return True
    _adopt_or_refuse(ctx, str(pid), fresh, resp)
    return True


def _search_items(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        items = []
        for name in ("content", "items", "proposals", "results", "data"):
            if isinstance(data.get(name), list):
                items = data[name]
                break
    else:
        items = []
    return [i for i in items if isinstance(i, dict)]


def _reconcile_create(document: Document, ctx: Context) -> Outcome | None:
    if not ctx.key:
        return None
    label = ctx.state.get("label") or lookup_label(
        _document_json(document).get("label"),
        ctx.key,
        str(_setting(ctx, "label_mode")),
        str(_setting(ctx, "label_prefix")),
    )
    if not label:
        return None
    try:
        resp = ctx.request(
            "GET",
            str(_setting(ctx, "search_path")),
            headers=_auth_headers(ctx),
            params={str(_setting(ctx, "search_label_param")): str(label)},
        )
    except TransportFailure as exc:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"proposal search failed ({exc.error.kind})",
                rule="siesmart:search-unreachable",
            )
        ) from None
    trace_header = str(_setting(ctx, "trace_header"))
    if resp.status != 200:
        outcome = classify(resp, None, kind="lookup", trace_header=trace_header)
        if outcome.kind not in (OutcomeKind.RETRY, OutcomeKind.THROTTLED, OutcomeKind.REAUTH):
            outcome = attrs.evolve(outcome, kind=OutcomeKind.CONFIG_ERROR)
        raise OutcomeError(
            attrs.evolve(
                outcome,
                message=f"proposal search: {outcome.message}",
                rule=f"{outcome.rule}:search",
            )
        )
    matches = [i for i in _search_items(resp.json()) if i.get("label") == label]
    ids = [p for p in (proposal_id_from(i) for i in matches) if p]
    if not ids:
        return Outcome(
            kind=OutcomeKind.RETRY,
            status=resp.status,
            message=f"no proposal labelled {label!r} at SieSmart: create it again",
            trace_id=classify(resp, None, trace_header=trace_header).trace_id,
            rule="siesmart:reconcile-not-found",
        )
    pid = ids[0]
    got, _data = _get_proposal(ctx, pid)
    etag = got.header("ETag")
    ctx.state["proposal_id"] = pid
    if etag:
        _store_etag(ctx, pid, etag)
    note = f" ({len(ids)} proposals carry that label; took the newest)" if len(ids) > 1 else ""
    return Outcome(
        kind=OutcomeKind.DELIVERED,
        status=got.status,
        message=f"proposal {pid} found by label {label!r}: the create had taken effect{note}",
        provider_ref=pid,
        trace_id=classify(got, None, trace_header=trace_header).trace_id,
        rule="siesmart:reconcile-found",
    )


def _subset_equal(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(
            _subset_equal(v, theirs.get(k)) for k, v in ours.items()
        )
    return bool(ours == theirs)


def _reconcile_modification(document: Document, ctx: Context) -> Outcome | None:
    pid = ctx.state.get("proposal_id") or _proposal_id(document, ctx)
    if not pid:
        return None
    pid = str(pid)
    resp, data = _get_proposal(ctx, pid)
    etag = resp.header("ETag")
    ours = _document_json(document)
    trace = classify(resp, None, trace_header=str(_setting(ctx, "trace_header"))).trace_id
    if not isinstance(data, dict):
        return None
    if document.kind == "decision":
        decision = data.get("decision")
        mine = {k: ours[k] for k in DECISION_FIELDS if k in ours}
        taken = (
            isinstance(decision, dict)
            and decision.get("decisionStatus") not in (None, "NOT_AVAILABLE")
            and _subset_equal(mine, decision)
        )
        status = decision.get("decisionStatus") if isinstance(decision, dict) else None
    else:
        body = {k: v for k, v in ours.items() if k not in ("id", "decision")}
        taken = _subset_equal(body, data)
        status = None
    if not taken and etag:
        # Not ours: resending is only safe while nobody else changed the proposal.
        try:
            _adopt_or_refuse(ctx, pid, etag, resp)
        except OutcomeError as exc:
            return exc.outcome
    if taken:
        if etag:
            _store_etag(ctx, pid, etag)
        return Outcome(
            kind=OutcomeKind.DELIVERED,
            status=resp.status,
            message=f"proposal {pid} already shows this {document.kind}: it had taken effect",
            provider_ref=pid,
            provider_status=str(status) if status else None,
            trace_id=trace,
            rule="siesmart:reconcile-found",
        )
    return Outcome(
        kind=OutcomeKind.RETRY,
        status=resp.status,
        message=f"proposal {pid} does not show this {document.kind}: send it again",
        trace_id=trace,
        rule="siesmart:reconcile-not-found",
    )


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
        return _reconcile_create(document, ctx)
    if document.kind in MODIFYING_KINDS:
        return _reconcile_modification(document, ctx)
    return None


# ---------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------


def _sample(name: str) -> bytes:
    from importlib.resources import files

    return files(__name__).joinpath("samples", name).read_bytes()


@docrelay.hookimpl
def demo_batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch:
    """Two proposals, an update whose If-Match is lost on the way (412 -> re-read: nobody
    changed the proposal -> resent -> delivered), and a decision; the first API request is
    throttled (429 with Retry-After: 1)."""
    from .sandbox import SieSmartSandbox

    cfg: Mapping[str, Any] = getattr(sandbox, "config", {})
    settings = {
        "base_url": sandbox.url,
        "client_id": cfg.get("client_id", SieSmartSandbox.options["client_id"]),
        "client_secret": cfg.get("client_secret", SieSmartSandbox.options["client_secret"]),
    }
    docs = (
        Document(
            id="siesmart-demo-proposal-1",
            provider=NAME,
            kind="proposal",
            content_type="application/json",
            payload=_sample("proposal-excavator.json"),
        ),
        Document(
            id="siesmart-demo-proposal-2",
            provider=NAME,
            kind="proposal",
            content_type="application/json",
            payload=_sample("proposal-ct-scanner-gb.json"),
        ),
        Document(
            id="siesmart-demo-update-1",
            provider=NAME,
            kind="proposal_update",
            content_type="application/json",
            payload=_sample("update-excavator-calculation.json"),
            metadata={"proposal": "siesmart-demo-proposal-1"},
        ),
        Document(
            id="siesmart-demo-decision-1",
            provider=NAME,
            kind="decision",
            content_type="application/json",
            payload=_sample("decision-excavator.json"),
            metadata={"proposal": "siesmart-demo-proposal-1", "after": "siesmart-demo-update-1"},
        ),
    )
    if isinstance(sandbox, SieSmartSandbox):
        # The first modifying call (the update) loses its If-Match on the way (a proxy).
        sandbox.drop_if_match(1)
    # DemoBatch's attrs converters (tuple) confuse mypy: pass the fields as a mapping.
    fields: dict[str, Any] = {
        "settings": settings,
        "documents": docs,
        "faults": ("throttle*1:1",),
        "expect": (
            "siesmart-demo-proposal-1: throttled (429, Retry-After: 1) then delivered",
            "siesmart-demo-update-1: If-Match lost (412), proposal unchanged: re-read then "
            "delivered",
            "siesmart-demo-proposal-2, siesmart-demo-decision-1: delivered",
        ),
    }
    return DemoBatch(**fields)
