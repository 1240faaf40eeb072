"""Red team: the hot-path shortcuts of issue 13 (the request cache, the first attempt outside
stamina's retry context, the payloads kept apart), attacked over real loopback HTTP against
the Acme sandbox; nothing mocked, no timed assertions."""

from __future__ import annotations

import re
from typing import Any

import attrs
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import Context, Document, HttpRequest, ProviderInfo, Relay, hookimpl
from docrelay.sandbox import Route, SandboxRequest, SandboxResponse

CREDS = {"client_id": "acme-client", "client_secret": "acme-secret-value"}
FAST = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "retry_wait_jitter": 0.0,
        "deferral_initial": 0.01, "deferral_max": 0.02, "poll_initial": 0.01}  # fmt: skip


def _doc(doc_id: str, body: bytes = b'{"amount": 1}') -> Document:
    return Document(id=doc_id, provider="acme", payload=body, content_type="application/json")


def _posts(sbx: AcmeSandbox) -> list[dict[str, Any]]:
    return [r for r in list(sbx.requests) if r["method"] == "POST" and r["path"] == "/documents"]


def _h(req: dict[str, Any], name: str) -> str | None:
    return next((str(v) for k, v in req["headers"].items() if k.lower() == name.lower()), None)


# -- the request cache and tokens ---------------------------------------------------------------


class SessionSandbox(AcmeSandbox):
    """Acme whose documents also carry the session token in ``X-Session`` (as providers that
    want the token in the envelope or the query do). The first POST answers 503; the second
    finds the provider has forgotten every token (401); later POSTs are taken in when
    ``X-Session`` is a token the provider knows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = 0

    def routes(self) -> list[Route]:
        return [Route("POST", re.compile(r"^/documents$"), self._session_post), *super().routes()]

    def _session_post(self, req: SandboxRequest) -> SandboxResponse:
        with self.lock:
            self.seen += 1
            seen = self.seen
        if seen == 1:
            return SandboxResponse.json(503, {"message": "busy"})
        if seen == 2:
            self.tokens.expire_all()
            return SandboxResponse.json(401, {"message": "invalid or expired token"})
        if self.tokens.subject(req.header("X-Session")) is None:
            return SandboxResponse.json(401, {"message": "session token expired"})
        return self._post(req)


class SessionAcme(AcmePlugin):
    """Acme declaring ``reuse_request``, whose request carries the session token."""

    @hookimpl
    def provider_info(self) -> ProviderInfo:
        return attrs.evolve(super().provider_info(), reuse_request=True)

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        from acme_testprovider import _fetch_token  # type: ignore[attr-defined]

        token = ctx.token(str(ctx.settings["client_id"]), _fetch_token)
        req = super().build_request(document, ctx)
        return req.with_headers({"X-Session": token})


def test_a_reused_request_does_not_carry_a_token_the_provider_refused(tmp_path: Any) -> None:
    """Break: ``reuse_request`` caches a build that read a token when the round's context had
    used that token already (the check compares the context's used tokens before and after
    the build, so a second attempt's build looks token-free). After the provider refused the
    token (401, the core fetched a new one), the cached request still carries the old token:
    every later attempt and round sends it again and the document is never taken in.
    Should: a build that reads a token is never reused (the hook's documented promise)."""
    sbx = SessionSandbox()
    sbx.start()
    try:
        relay = Relay(
            f"sqlite:///{tmp_path / 'docrelay.db'}",
            providers={"acme": {"base_url": sbx.url, **CREDS}},
            engine={**FAST, "inprocess_attempts": 4},
            plugins=[SessionAcme()],
            autoload=False,
        )
        try:
            relay.submit(_doc("inv-1"))
            relay.run_until_settled(timeout=20)
            posts = _posts(sbx)
            issued = sbx.tokens.issued_tokens()
            state = relay.status("inv-1").state.value
        finally:
            relay.close()
    finally:
        sbx.stop()
    # every POST after the 401 carries a token issued after it, the one in Authorization
    assert len(issued) >= 2
    stale = [p for p in posts[2:] if _h(p, "X-Session") == issued[0]]
    assert stale == [], f"{len(stale)} of {len(posts) - 2} POSTs after the 401 sent the old token"
    assert state == "delivered"
