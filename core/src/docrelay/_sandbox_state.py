"""Provider state kept by sandboxes: bearer tokens with a lifetime, the OAuth2 token route's
declaration, idempotency keys seen, sliding-window rate limits (re-exported by
:mod:`docrelay.sandbox`)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Hashable
from typing import Any, Literal

import attrs

from ._sandbox_http import SandboxRequest

__all__ = ["IdempotencyKeys", "OAuthTokenRoute", "SlidingWindow", "TokenIssuer"]


class TokenIssuer:
    """Bearer tokens with a lifetime, as an OAuth2 server hands them out."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.issued = 0

    def issue(self, subject: str, ttl: float | None = None) -> tuple[str, float]:
        life = self.ttl if ttl is None else ttl
        token = "sbx-" + uuid.uuid4().hex
        with self._lock:
            self._tokens[token] = (subject, time.time() + life)
            self.issued += 1
        return token, life

    def subject(self, token: str | None) -> str | None:
        """The subject of a valid, unexpired token, else ``None``."""
        if not token:
            return None
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    def bearer(self, request: SandboxRequest) -> str | None:
        """The subject of the request's valid ``Authorization: Bearer`` token, else ``None``."""
        auth = request.header("Authorization") or ""
        if not auth.lower().startswith("bearer "):
            return None
        return self.subject(auth[7:].strip())

    def issued_tokens(self) -> list[str]:
        """Every token issued so far, expired ones included (tests look for leaks)."""
        with self._lock:
            return list(self._tokens)

    def expire_all(self) -> None:
        """Every token issued so far expires now (the provider's clock jumped)."""
        with self._lock:
            self._tokens = {t: (s, 0.0) for t, (s, _) in self._tokens.items()}


@attrs.frozen
class OAuthTokenRoute:
    """An OAuth2 client-credentials token route, declared as :attr:`Sandbox.token_route`.

    The route answers ``POST path`` (never subject to fault injection): it reads the request
    (``body``: ``"form"``, ``application/x-www-form-urlencoded`` as RFC 6749 says, or
    ``"json"``, a JSON object as Auth0 takes it), checks ``grant_type`` (unless
    ``grant_type_required`` is false) and the client against :meth:`Sandbox.token_clients`,
    runs :meth:`Sandbox.check_token_request` for provider-specific fields (scope, audience),
    and issues a token from :attr:`Sandbox.tokens` for :meth:`Sandbox.token_lifetime`
    seconds. Refusals go through :meth:`Sandbox.token_refusal`, the grant through
    :meth:`Sandbox.token_grant`; :meth:`Sandbox.bearer` checks the tokens on other routes.
    """

    path: str = "/oauth/token"
    body: Literal["form", "json"] = "form"
    grant_type_required: bool = True


class IdempotencyKeys:
    """The idempotency keys a provider has seen, each with what it kept the first time
    (a document id, a record): :attr:`Sandbox.idempotency`. Thread-safe."""

    def __init__(self) -> None:
        self._first: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def seen(self, key: Hashable) -> Any:
        """What was kept for *key* the first time, ``None`` for a new key."""
        with self._lock:
            return self._first.get(key)

    def remember(self, key: Hashable, value: Any) -> Any:
        """Keep *value* for a new *key* and return ``None``; for a key seen before, keep
        nothing and return the first value (check and record are one step)."""
        with self._lock:
            first = self._first.get(key)
            if first is None:
                self._first[key] = value
            return first

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._first.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._first.clear()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._first

    def __len__(self) -> int:
        with self._lock:
            return len(self._first)


class SlidingWindow:
    """At most ``limit`` events per ``per`` seconds for each key."""

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count one event; ``None`` if allowed, else seconds until one is allowed."""
        now = time.monotonic()
        with self._lock:
            q = self._events.setdefault(key, deque())
            while q and q[0] <= now - self.per:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.0, q[0] + self.per - now)
            q.append(now)
            return None
