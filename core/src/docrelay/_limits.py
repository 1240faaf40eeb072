"""Limits shared by every worker of a store: provider tokens and rate-limit slots.

Both live in the store (SQLite and PostgreSQL alike), so every process on it shares them:

- **Rate slots.** Every request to a provider's own host (sends, ETag reads, reconcile
  searches, polls, token fetches there) takes the next slot of the provider's bucket, evenly
  spaced at the limit's interval. The bucket is the provider's host (``rate_limit_scope =
  "host"``: a limit per connecting IP, shared by all credentials) or one credential
  (``"credential"``); requests to other hosts (an identity server) are not counted.
- **Tokens.** One fetch at a time per credential across processes (the store's token lock);
  the others wait and then read the token it saved. A token is stored **encrypted**
  (AES-256-GCM, a fresh nonce per token, the credential as associated data) under a key
  derived from the provider's secret settings (the client secret...), which are never in the
  store: whoever can read the store but not the configuration cannot use a stored token, and
  whoever has the configuration could fetch a token anyway. A provider without secret
  settings does not share its tokens (each process fetches its own).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._context import Token
from ._models import RateLimit
from ._redact import register_secret
from ._settings import ProviderRuntime
from ._store import Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["RateLimiter", "TokenCache", "open_token", "rate_bucket", "seal_token", "token_key"]

RATE_LIMIT_SCOPES = ("host", "credential")
_SEALED_PREFIX = "aesgcm1:"


def token_key(rt: ProviderRuntime) -> bytes | None:
    """Key material for the tokens of *rt*'s provider: a digest of its secret settings
    (``None`` when it has none: its tokens are then not stored)."""
    values = sorted(
        str(rt.settings[s.name]) for s in rt.info.settings if s.secret and rt.settings.get(s.name)
    )
    if not values:
        return None
    return hashlib.sha256("\0".join([rt.info.name, *values]).encode()).digest()


def _aead(key: bytes, credential: str) -> AESGCM:
    # Imported when a token is shared, not with docrelay (memory of a plain send).
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"docrelay token v1",
        info=credential.encode(),
    )
    return AESGCM(hkdf.derive(key))


def seal_token(key: bytes, credential: str, value: str) -> str:
    """*value* encrypted for the store (text), bound to *credential*."""
    nonce = os.urandom(12)
    sealed = _aead(key, credential).encrypt(nonce, value.encode(), credential.encode())
    return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_token(key: bytes, credential: str, stored: str) -> str | None:
    """The token in *stored*, or ``None`` when it cannot be opened with *key* (another
    secret, another credential, or not written by this docrelay)."""
    if not stored.startswith(_SEALED_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(stored[len(_SEALED_PREFIX) :].encode())
        plain = _aead(key, credential).decrypt(raw[:12], raw[12:], credential.encode())
    except ValueError:
        return None
    except Exception as exc:  # cryptography's InvalidTag (imported only when used)
        if type(exc).__name__ != "InvalidTag":
            raise
        return None
    return plain.decode("utf-8", "replace")


def _origin(url: str) -> tuple[str, int | None]:
    """Host and port of *url*, the scheme's default port spelled out (``https://h`` and
    ``https://h:443`` are one server)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.hostname or "").lower(), port if port is not None else default


def rate_bucket(rt: ProviderRuntime, url: str) -> str | None:
    """The rate-limit bucket a request to *url* counts against (``None``: not limited)."""
    if rt.rate is None:
        return None
    base = urlsplit(rt.base_url).netloc.lower()
    if "://" in url and _origin(url) != _origin(rt.base_url):
        return None  # another server (an identity provider): not this provider's limit
    scope = rt.settings.get("rate_limit_scope") or rt.info.rate_limit_scope
    if scope == "host":
        return f"{rt.info.name}@{base}"
    return f"{rt.info.name}:{rt.credential}"


class TokenCache:
    """Tokens per credential, refreshed shortly before expiry, one fetch at a time across
    the processes of a store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tokens: dict[str, Token] = {}
        self._fetched: dict[str, float] = {}
        #: The stored (sealed) form of the tokens this process holds, to drop a refused one.
        self._sealed: dict[str, tuple[str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, token: Token | None, now: float) -> bool:
        """Valid for a while yet: 30 s before expiry, or a tenth of a short lifetime."""
        if token is None:
            return False
        life = token.expires_at - self._fetched.get(token.value, token.expires_at - 300.0)
        return token.expires_at - now > min(30.0, max(0.5, life / 10.0))

    def _shared(self, credential: str, key: bytes, now: float) -> Token | None:
        shared = self._store.shared_token(credential, now)
        if shared is None:
            return None
        value = open_token(key, credential, shared[0])
        if value is None:
            return None  # sealed under another secret (rotated): fetch a new one
        register_secret(value)
        self._sealed[credential] = (value, shared[0])
        return Token(value, shared[1])

    def get(
        self,
        credential: str,
        fetch: Callable[[], Token],
        now: Callable[[], float],
        key: bytes | None = None,
    ) -> Token:
        """The token of *credential*: cached, else shared by another worker, else fetched.
        Without *key* the token stays in this process (it cannot be stored encrypted)."""
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
            shared_lock = self._store.token_lock(credential) if key is not None else None
            if shared_lock is None or key is None:
                token = fetch()
            else:
                with shared_lock:
                    shared = self._shared(credential, key, now())
                    if shared is not None and self._fresh(shared, now()):
                        token = shared
                    else:
                        token = fetch()
                        register_secret(token.value)
                        sealed = seal_token(key, credential, token.value)
                        self._store.save_token(credential, sealed, token.expires_at)
                        self._sealed[credential] = (token.value, sealed)
            register_secret(token.value)
            old = self._tokens.get(credential)
            if old is not None and old.value != token.value:
                self._fetched.pop(old.value, None)
            self._tokens[credential] = token
            self._fetched.setdefault(token.value, now())
            return token

    def invalidate(self, credential: str, value: str) -> None:
        with self._guard:
            current = self._tokens.get(credential)
            if current is not None and current.value == value:
                del self._tokens[credential]
            sealed = self._sealed.get(credential)
        if sealed is not None and sealed[0] == value:
            self._store.drop_token(credential, sealed[1])


class RateLimiter:
    """Evenly spaced request slots per bucket; shared via the store when it can."""

    def __init__(self, store: Store, margin: float) -> None:
        self._store = store
        self._margin = margin
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, bucket: str, rate: RateLimit, clock: Callable[[], float]) -> float:
        """Take the next slot of *bucket* and sleep until it starts; returns the wait."""
        interval = rate.interval * (1.0 + self._margin)
        now = clock()
        slot = self._store.rate_slot(bucket, interval, now)
        later = clock()
        if slot is not None and later - now > max(interval, 0.25):
            # The store kept us waiting (another process held its lock): a slot reserved
            # from the time before the wait could already be past, and several such
            # requests would leave at once. Take one from now (the first is left unused).
            now = later
            slot = self._store.rate_slot(bucket, interval, now)
        if slot is None:
            with self._lock:
                slot = max(now, self._next.get(bucket, now))
                self._next[bucket] = slot + interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return max(0.0, delay)
