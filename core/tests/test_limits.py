"""Shared limits at unit level: token sealing, the token key, rate buckets and scope, and the
token cache's single flight over two stores on one SQLite file (threads standing in for
processes; tests/test_two_processes.py runs real processes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from docrelay import ProviderInfo, RateLimit, Setting
from docrelay._context import Token
from docrelay._limits import (
    TokenCache,
    open_token,
    rate_bucket,
    seal_token,
    token_key,
)
from docrelay._settings import EngineSettings, ProviderRuntime
from docrelay._store import open_store
from docrelay.exceptions import ConfigError

SECRET = "limits-test-client-secret-9f2c"


def info(scope: str = "credential", secret: bool = True) -> ProviderInfo:
    return ProviderInfo(
        name="acme",
        title="Acme",
        environments={"sandbox": "http://127.0.0.1:8799"},
        default_environment="sandbox",
        rate_limit=RateLimit(10, 1),
        rate_limit_scope=scope,
        settings=(
            Setting("client_id", required=True),
            Setting("client_secret", secret=secret, required=True),
        ),
        credential_setting="client_id",
    )


def runtime(scope: str = "credential", client: str = "c1", **raw: object) -> ProviderRuntime:
    return ProviderRuntime.build(
        info(scope), {"client_id": client, "client_secret": SECRET, **raw}, EngineSettings()
    )


def test_sealed_token_opens_only_with_its_key_and_credential() -> None:
    key = token_key(runtime())
    assert key is not None
    sealed = seal_token(key, "acme:c1", "tok-plain-value-123")
    assert "tok-plain-value-123" not in sealed
    assert seal_token(key, "acme:c1", "tok-plain-value-123") != sealed  # fresh nonce
    assert open_token(key, "acme:c1", sealed) == "tok-plain-value-123"
    assert open_token(key, "acme:c2", sealed) is None  # bound to the credential
    other = token_key(ProviderRuntime.build(
        info(), {"client_id": "c1", "client_secret": "rotated-secret-0000"}, EngineSettings()
    ))  # fmt: skip
    assert other is not None
    assert open_token(other, "acme:c1", sealed) is None  # a rotated secret: fetch anew
    assert open_token(key, "acme:c1", "tok-plain-value-123") is None
    assert open_token(key, "acme:c1", "aesgcm1:!!notbase64") is None


def test_token_key_comes_from_secret_settings_only() -> None:
    assert token_key(runtime()) == token_key(runtime(client="c2"))
    no_secret = ProviderRuntime.build(
        info(secret=False), {"client_id": "c1", "client_secret": "x"}, EngineSettings()
    )
    assert token_key(no_secret) is None


def test_rate_bucket_by_scope_and_host() -> None:
    cred = runtime("credential")
    assert rate_bucket(cred, "/documents") == f"acme:{cred.credential}"
    assert rate_bucket(runtime("credential", client="c2"), "/x") != rate_bucket(cred, "/x")
    host = runtime("host")
    assert rate_bucket(host, "/documents") == "acme@127.0.0.1:8799"
    assert rate_bucket(runtime("host", client="c2"), "/x") == rate_bucket(host, "/x")
    assert rate_bucket(host, "http://127.0.0.1:8799/oauth/token") == "acme@127.0.0.1:8799"
    # Another server (an identity provider) is not counted against this provider's limit.
    assert rate_bucket(host, "https://auth.example/oauth/token") is None
    # The setting overrides the plugin's default.
    assert rate_bucket(runtime("host", rate_limit_scope="credential"), "/x") == (
        f"acme:{cred.credential}"
    )
    unlimited = ProviderRuntime.build(
        attrs_evolve_no_limit(), {"client_id": "c1", "client_secret": SECRET}, EngineSettings()
    )
    assert rate_bucket(unlimited, "/x") is None


def attrs_evolve_no_limit() -> ProviderInfo:
    import attrs

    return attrs.evolve(info(), rate_limit=None)


def test_rate_limit_scope_is_validated() -> None:
    with pytest.raises(ConfigError, match="rate_limit_scope must be one of 'host', 'credential'"):
        runtime(rate_limit_scope="ip")
    with pytest.raises(ValueError, match="rate_limit_scope"):
        info(scope="ip")


def test_token_cache_fetches_once_for_two_stores_on_one_file(tmp_path: Path) -> None:
    """Two stores (as two processes would open them) and four threads each: one fetch;
    the stored value is sealed; a cache without a key stores nothing."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    stores = [open_store(url), open_store(url)]
    caches = [TokenCache(s) for s in stores]
    key = token_key(runtime())
    fetches = 0
    guard = threading.Lock()
    got: list[str] = []

    def fetch() -> Token:
        nonlocal fetches
        with guard:
            fetches += 1
        time.sleep(0.2)  # the fetch is slow: the others must wait for it, not fetch too
        return Token.from_expires_in("tok-shared-7788aa", 3600)

    def use(i: int) -> None:
        tok = caches[i % 2].get("acme:c1", fetch, time.time, key=key)
        with guard:
            got.append(tok.value)

    threads = [threading.Thread(target=use, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert fetches == 1
        assert got == ["tok-shared-7788aa"] * 8
        stored = stores[0].shared_token("acme:c1", time.time())
        assert stored is not None
        assert "tok-shared-7788aa" not in stored[0]
        assert b"tok-shared-7788aa" not in b"".join(p.read_bytes() for p in tmp_path.glob("t.db*"))
        # A refused token is dropped for everybody.
        caches[1].invalidate("acme:c1", "tok-shared-7788aa")
        assert stores[0].shared_token("acme:c1", time.time()) is None
        # Without a key (no secret settings) the token stays in the process.
        TokenCache(stores[0]).get("acme:c9", fetch, time.time, key=None)
        assert stores[1].shared_token("acme:c9", time.time()) is None
    finally:
        for s in stores:
            s.close()
