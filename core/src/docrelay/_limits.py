"""Limits shared by every worker: provider tokens and rate-limit send slots."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._context import Token
from ._models import RateLimit
from ._redact import register_secret
from ._store import Store

__all__ = ["RateLimiter", "TokenCache"]


class TokenCache:
    """Tokens per credential, refreshed shortly before expiry, one fetch at a time."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tokens: dict[str, Token] = {}
        self._fetched: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, token: Token | None, now: float) -> bool:
        """Valid for a while yet: 30 s before expiry, or a tenth of a short lifetime."""
        if token is None:
            return False
        life = token.expires_at - self._fetched.get(token.value, token.expires_at - 300.0)
        return token.expires_at - now > min(30.0, max(0.5, life / 10.0))

    def get(self, credential: str, fetch: Callable[[], Token], now: Callable[[], float]) -> Token:
        token = self._tokens.get(credential)
        if self._fresh(token, now()):
            assert token is not None
            return token
        with self._guard:
            lock = self._locks.setdefault(credential, threading.Lock())
        with lock:
            token = self._tokens.get(credential)
            if self._fresh(token, now()):
                assert token is not None
                return token
            shared_lock = self._store.token_lock(credential)
            if shared_lock is None:
                token = fetch()
            else:
                with shared_lock:
                    shared = self._store.shared_token(credential, now())
                    if shared is not None and self._fresh(Token(shared[0], shared[1]), now()):
                        token = Token(shared[0], shared[1])
                    else:
                        token = fetch()
                        self._store.save_token(credential, token.value, token.expires_at)
            register_secret(token.value)
            old = self._tokens.get(credential)
            if old is not None and old.value != token.value:
                self._fetched.pop(old.value, None)
            self._tokens[credential] = token
            self._fetched[token.value] = now()
            return token

    def invalidate(self, credential: str, value: str) -> None:
        with self._guard:
            current = self._tokens.get(credential)
            if current is not None and current.value == value:
                del self._tokens[credential]
        self._store.drop_token(credential, value)


class RateLimiter:
    """Evenly spaced send slots per provider credential; shared via the store when it can."""

    def __init__(self, store: Store, margin: float) -> None:
        self._store = store
        self._margin = margin
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, bucket: str, rate: RateLimit, clock: Callable[[], float]) -> float:
        interval = rate.interval * (1.0 + self._margin)
        now = clock()
        slot = self._store.rate_slot(bucket, interval, now)
        if slot is None:
            with self._lock:
                slot = max(now, self._next.get(bucket, now))
                self._next[bucket] = slot + interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return max(0.0, delay)
