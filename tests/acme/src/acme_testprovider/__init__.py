"""Acme: a small reference provider with a sandbox, for docrelay's own tests (a test-only
distribution under ``tests/acme``, never shipped; register it with
``Relay(plugins=[AcmePlugin()], autoload=False)``).

The Acme API: ``POST /token`` (client credentials, JSON) gives a bearer token;
``POST /documents`` with ``Idempotency-Key`` takes a document (200 ``{"id"}``; 409 when the
key was seen; 422 with field errors when the payload contains ``INVALID``); kind ``async``
answers 202 and is polled at ``GET /documents/{id}`` until done (200 ``{"status": "valid" |
"invalid"}``); ``GET /documents?key=K`` looks a document up; webhooks are
``{"event": "validated", "key": K, "result": "ok" | "error", "errors": [...]}``.
With ``dedupe=false`` the provider ignores the key (idempotency ``none``): docrelay then
reconciles by lookup before resending.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from docrelay import (
    Context,
    DemoBatch,
    Document,
    FieldError,
    HttpRequest,
    HttpResponse,
    Notification,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    RateLimit,
    Setting,
    Token,
    TransportError,
    hookimpl,
)
from docrelay.helpers import retry_after_seconds
from docrelay.sandbox import OAuthTokenRoute, Route, Sandbox, SandboxRequest, SandboxResponse

__all__ = ["AcmePlugin", "AcmeSandbox"]


class AcmeSandbox(Sandbox):
    """The Acme API on loopback. Options: ``dedupe`` (honour Idempotency-Key),
    ``polls_until_done``, ``token_ttl``, ``clients`` ({client_id: secret})."""

    name = "acme"
    options: ClassVar[Mapping[str, Any]] = {
        "dedupe": True,
        "polls_until_done": 1,
        "token_ttl": 3600.0,
        "clients": {"acme-client": "acme-secret-value"},
    }
    token_route = OAuthTokenRoute(path="/token", body="json", grant_type_required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.docs: dict[str, dict[str, Any]] = {}
        self._state = threading.Lock()

    def reset(self) -> None:
        super().reset()
        with self._state:
            self.docs.clear()

    def routes(self) -> list[Route]:
        return [
            Route("POST", re.compile(r"^/documents$"), self._post),
            Route("GET", re.compile(r"^/documents$"), self._lookup),
            Route("GET", re.compile(r"^/documents/(?P<id>[^/]+)$"), self._get),
        ]

    def _post(self, req: SandboxRequest) -> SandboxResponse:
        if self.bearer(req) is None:
            return SandboxResponse.json(401, {"message": "invalid or expired token"})
        key = req.header("Idempotency-Key")
        kind = req.header("X-Acme-Kind") or "document"
        with self._state:
            duplicate = self.duplicate_of(req, key) if self.config["dedupe"] and key else None
            if duplicate is not None:
                return duplicate  # 409 {"message": "already received", "id": first id}
            if b"INVALID" in req.body:
                return SandboxResponse.json(
                    422,
                    {
                        "message": "validation failed",
                        "errors": [{"field": "amount", "message": "must be positive"}],
                        "errorUrl": "https://portal.acme.example/errors/1",
                    },
                )
            doc_id = uuid.uuid4().hex
            self.docs[doc_id] = {"key": key, "kind": kind, "polls": 0, "body": req.body}
            if key:
                self.idempotency.remember(key, doc_id)
        self.record_effect(
            "document_received",
            doc_id,
            idempotency_key=key,
            body=req.body.decode("utf-8", "replace"),
        )
        status = 202 if kind == "async" else 200
        return SandboxResponse.json(status, {"id": doc_id})

    def _lookup(self, req: SandboxRequest) -> SandboxResponse:
        if self.bearer(req) is None:
            return SandboxResponse.json(401, {"message": "invalid or expired token"})
        key = req.arg("key")
        with self._state:
            found = [i for i, d in self.docs.items() if key and d["key"] == key]
        return SandboxResponse.json(200, {"items": [{"id": i} for i in found]})

    def _get(self, req: SandboxRequest) -> SandboxResponse:
        if self.bearer(req) is None:
            return SandboxResponse.json(401, {"message": "invalid or expired token"})
        with self._state:
            d = self.docs.get(req.params["id"])
            if d is None:
                return SandboxResponse.json(404, {"message": "no such document"})
            d["polls"] += 1
            done = d["polls"] >= int(self.config["polls_until_done"])
            invalid = b"BADASYNC" in d["body"]
        if not done:
            return SandboxResponse.json(202, {"status": "running"})
        if invalid:
            return SandboxResponse.json(
                200,
                {
                    "status": "invalid",
                    "errors": [{"field": "currency", "message": "must be ISO 4217"}],
                },
            )
        return SandboxResponse.json(200, {"status": "valid"})


def _fetch_token(ctx: Context) -> Token:
    r = ctx.request(
        "POST",
        ctx.url("/token"),
        body=json.dumps(
            {"client_id": ctx.settings["client_id"], "client_secret": ctx.settings["client_secret"]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    if r.status == 401:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                status=401,
                message="token refused: invalid_client",
                rule="acme:token",
            )
        )
    if r.status != 200:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                status=r.status,
                message="token endpoint unavailable",
                rule="acme:token",
            )
        )
    data = r.json() or {}
    return Token.from_expires_in(str(data["access_token"]), float(data["expires_in"]))


class AcmePlugin:
    """The Acme provider plugin. ``name`` and ``dedupe`` let tests register variants."""

    def __init__(
        self, name: str = "acme", *, dedupe: bool = True, rate_limit: RateLimit | None = None
    ) -> None:
        self.__name__ = f"docrelay_{name}"
        self.name = name
        self.dedupe = dedupe
        self.rate_limit = rate_limit

    @hookimpl
    def provider_info(self) -> ProviderInfo:
        return ProviderInfo(
            name=self.name,
            title="Acme (reference provider)",
            environments={"sandbox": "http://127.0.0.1:8799"},
            default_environment="sandbox",
            auth="oauth2_client_credentials",
            kinds=("document", "async", "followup"),
            max_payload_bytes=1_000_000,
            rate_limit=self.rate_limit,
            idempotency="key" if self.dedupe else "none",
            async_validation="poll",
            settings=(
                Setting("client_id", required=True, help="OAuth2 client id"),
                Setting("client_secret", required=True, secret=True, help="OAuth2 secret"),
            ),
            credential_setting="client_id",
        )

    @hookimpl
    def provider_sandbox(self) -> type[Sandbox]:
        return AcmeSandbox

    @hookimpl
    def hold(self, document: Document, ctx: Context) -> str | None:
        after = document.metadata.get("after")
        if document.kind != "followup" or not after:
            return None
        states = [d.state for d in ctx.find_documents() if d.id == after]
        if states and states[0] in ("delivered", "duplicate"):
            return None
        return f"waiting for document {after} to be delivered"

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        return HttpRequest(
            "POST",
            "/documents",
            body=document.payload,
            headers={"Content-Type": document.content_type, "X-Acme-Kind": document.kind},
        )

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        token = ctx.token(str(ctx.settings["client_id"]), _fetch_token)
        headers = {"Authorization": f"Bearer {token}"}
        if ctx.key:
            headers["Idempotency-Key"] = ctx.key
        return headers

    @hookimpl
    def classify_response(
        self, response: HttpResponse | None, error: TransportError | None, ctx: Context
    ) -> Outcome | None:
        if response is None:
            return None
        data = response.json()
        data = data if isinstance(data, dict) else {}
        ref = data.get("id") if isinstance(data.get("id"), str) else None
        if response.status == 200:
            return Outcome(
                kind=OutcomeKind.DELIVERED, status=200, provider_ref=ref, rule="acme:200"
            )
        if response.status == 202:
            if ref:
                ctx.state["acme_id"] = ref
            return Outcome(kind=OutcomeKind.ACCEPTED, status=202, provider_ref=ref, rule="acme:202")
        if response.status == 409:
            return Outcome(
                kind=OutcomeKind.DUPLICATE,
                status=409,
                provider_ref=ref,
                message=str(data.get("message") or "duplicate"),
                rule="acme:409",
            )
        if response.status == 422:
            raw = data.get("errors")
            errors: list[Any] = raw if isinstance(raw, list) else []
            return Outcome(
                kind=OutcomeKind.REJECTED,
                status=422,
                message=str(data.get("message")),
                field_errors=[
                    FieldError(field=str(e.get("field")), message=str(e.get("message")))
                    for e in errors
                    if isinstance(e, dict)
                ],
                error_url=data.get("errorUrl") if isinstance(data.get("errorUrl"), str) else None,
                rule="acme:422",
            )
        if response.status == 429:
            return Outcome(
                kind=OutcomeKind.THROTTLED,
                status=429,
                wait=retry_after_seconds(response.header("Retry-After"), 0.0),
                rule="acme:429",
            )
        return None

    @hookimpl
    def poll_status(self, document: Document, ctx: Context) -> Outcome | None:
        acme_id = ctx.state.get("acme_id")
        if not acme_id:
            return Outcome(kind=OutcomeKind.RETRY, resend=True, message="no id to poll")
        token = ctx.token(str(ctx.settings["client_id"]), _fetch_token)
        r = ctx.request(
            "GET", f"/documents/{acme_id}", headers={"Authorization": f"Bearer {token}"}
        )
        data = r.json() if isinstance(r.json(), dict) else {}
        if r.status == 202:
            return Outcome(kind=OutcomeKind.ACCEPTED, status=202, rule="acme:poll-running")
        if r.status == 200 and data.get("status") == "valid":
            return Outcome(
                kind=OutcomeKind.DELIVERED, status=200, provider_ref=acme_id, rule="acme:poll-valid"
            )
        if r.status == 200 and data.get("status") == "invalid":
            return Outcome(
                kind=OutcomeKind.REJECTED,
                status=200,
                message="validation failed",
                field_errors=[
                    FieldError(field=e.get("field"), message=str(e.get("message")))
                    for e in (data.get("errors") or [])
                    if isinstance(e, dict)
                ],
                rule="acme:poll-invalid",
            )
        return Outcome(kind=OutcomeKind.RETRY, status=r.status, rule="acme:poll-other")

    @hookimpl
    def reconcile(self, document: Document, ctx: Context) -> Outcome | None:
        if not ctx.key:
            return None
        token = ctx.token(str(ctx.settings["client_id"]), _fetch_token)
        r = ctx.request(
            "GET",
            "/documents",
            params={"key": ctx.key},
            headers={"Authorization": f"Bearer {token}"},
        )
        if r.status != 200:
            raise OutcomeError(
                Outcome(
                    kind=OutcomeKind.RETRY,
                    status=r.status,
                    message="lookup failed",
                    rule="acme:lookup",
                )
            )
        data = r.json() or {}
        items = data.get("items") or []
        if items:
            return Outcome(
                kind=OutcomeKind.DELIVERED,
                provider_ref=str(items[0]["id"]),
                message="found at the provider after an interrupted send",
                rule="acme:reconcile-found",
            )
        return Outcome(
            kind=OutcomeKind.RETRY, message="not at the provider", rule="acme:reconcile-missing"
        )

    @hookimpl
    def parse_notification(
        self, body: bytes, headers: Mapping[str, str], ctx: Context
    ) -> Notification | None:
        data = json.loads(body)
        if not isinstance(data, dict) or "event" not in data:
            raise ValueError("not an Acme notification")
        if data["event"] != "validated":
            return None
        ok = data.get("result") == "ok"
        return Notification(
            key=str(data.get("key")),
            outcome=Outcome(
                kind=OutcomeKind.DELIVERED if ok else OutcomeKind.REJECTED,
                field_errors=[
                    FieldError(field=None, message=str(m)) for m in data.get("errors", [])
                ],
                rule="acme:webhook",
            ),
        )

    @hookimpl
    def demo_batch(self, sandbox: Sandbox, webhook_url: str) -> DemoBatch:
        return DemoBatch(
            settings={
                "base_url": sandbox.url,
                "client_id": "acme-client",
                "client_secret": "acme-secret-value",
            },
            documents=(
                Document(
                    id="acme-1",
                    provider=self.name,
                    payload=b'{"amount": 1}',
                    content_type="application/json",
                ),
            ),
        )
