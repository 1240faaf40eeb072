"""Shared fixtures of the core's tests: the Acme reference provider and its loopback sandbox,
relays on a per-test SQLite store, and helpers that read the sandbox's request log.

Everything goes over real HTTP on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import Document, Relay

#: Short waits so that retries, deferrals and polls happen within a test.
FAST_ENGINE: dict[str, Any] = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.02,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.2,
    "poll_initial": 0.01,
    "poll_max": 0.05,
    "read_timeout": 10.0,
}

CLIENT_ID = "acme-client"
CLIENT_SECRET = "acme-secret-value"


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test depends on the developer's plugin or crash environment variables."""
    for name in ("DOCRELAY_DISABLED_PLUGINS", "DOCRELAY_DISABLE_PLUGIN_AUTOLOAD",
                 "DOCRELAY_CRASH_AT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fast_engine() -> dict[str, Any]:
    """A copy of the fast engine settings (tests may change it)."""
    return dict(FAST_ENGINE)


@pytest.fixture
def sandbox() -> Iterator[AcmeSandbox]:
    """A running Acme sandbox on a free loopback port."""
    sbx = AcmeSandbox()
    sbx.start()
    try:
        yield sbx
    finally:
        sbx.stop()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., AcmeSandbox]]:
    """Start more sandboxes (``make_sandbox(faults=[...], dedupe=False)``); all are stopped."""
    started: list[AcmeSandbox] = []

    def make(cls: type[AcmeSandbox] = AcmeSandbox, **kwargs: Any) -> AcmeSandbox:
        sbx = cls(**kwargs)
        sbx.start()
        started.append(sbx)
        return sbx

    yield make
    for sbx in started:
        sbx.stop()


def acme_settings(sbx: AcmeSandbox, **extra: Any) -> dict[str, Any]:
    return {"base_url": sbx.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **extra}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'docrelay.db'}"


@pytest.fixture
def make_relay(store_url: str) -> Iterator[Callable[..., Relay]]:
    """Build relays (closed at the end of the test).

    ``make_relay(sandbox)`` gives a relay with the Acme plugin against *sandbox*;
    ``providers=``, ``plugins=``, ``engine=`` (merged into the fast settings) and
    ``store=`` override the defaults.
    """
    relays: list[Relay] = []

    def make(
        sbx: AcmeSandbox | None = None,
        *,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        plugins: Sequence[object] | None = None,
        engine: Mapping[str, Any] | None = None,
        store: str | None = None,
        settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Relay:
        if providers is None:
            assert sbx is not None
            providers = {"acme": acme_settings(sbx, **dict(settings or {}))}
        relay = Relay(
            store or store_url,
            providers=providers,
            engine={**FAST_ENGINE, **dict(engine or {})},
            plugins=list(plugins) if plugins is not None else [AcmePlugin()],
            autoload=False,
            **kwargs,
        )
        relays.append(relay)
        return relay

    yield make
    for r in relays:
        r.close()


def doc(
    doc_id: str,
    payload: bytes = b'{"amount": 10}',
    *,
    provider: str = "acme",
    kind: str = "document",
    content_type: str = "application/json",
    metadata: Mapping[str, str] | None = None,
) -> Document:
    return Document(
        id=doc_id, provider=provider, payload=payload, kind=kind, content_type=content_type,
        metadata=dict(metadata or {}),
    )  # fmt: skip


@pytest.fixture
def make_doc() -> Callable[..., Document]:
    """``make_doc("inv-1", b"...", kind="async")``: an Acme document."""
    return doc


def header(req: Mapping[str, Any], name: str) -> str | None:
    for k, v in req["headers"].items():
        if k.lower() == name.lower():
            return str(v)
    return None


def posts(sbx: AcmeSandbox, key: str | None = None) -> list[dict[str, Any]]:
    """The ``POST /documents`` requests the sandbox saw (for one key, if given)."""
    out = [r for r in list(sbx.requests) if r["method"] == "POST" and r["path"] == "/documents"]
    if key is not None:
        out = [r for r in out if header(r, "Idempotency-Key") == key]
    return out


def effects(sbx: AcmeSandbox, key: str | None = None) -> list[dict[str, Any]]:
    """The business effects (documents taken in) the sandbox recorded."""
    out = [e for e in list(sbx.effects) if e["kind"] == "document_received"]
    if key is not None:
        out = [e for e in out if e.get("idempotency_key") == key]
    return out


class Acme:
    """Helpers over the sandbox's logs, as a fixture (``--import-mode=importlib`` does not
    let test modules import the conftest)."""

    settings = staticmethod(acme_settings)
    doc = staticmethod(doc)
    header = staticmethod(header)
    posts = staticmethod(posts)
    effects = staticmethod(effects)
    CLIENT_ID = CLIENT_ID
    CLIENT_SECRET = CLIENT_SECRET
    FAST_ENGINE = FAST_ENGINE

    @staticmethod
    def paths(sbx: AcmeSandbox) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in list(sbx.requests)]


@pytest.fixture
def acme() -> type[Acme]:
    """Helpers: ``acme.doc``, ``acme.posts``, ``acme.effects``, ``acme.header``..."""
    return Acme


# ---------------------------------------------------------------------------------------------
# PostgreSQL tests (test_store_contract.py; owner: the PostgreSQL store)
#
# They run against a real server named by DOCRELAY_TEST_PG_URL. Without it they are skipped
# with the reason below, and the end of the run says plainly that they did not run; with
# DOCRELAY_REQUIRE_PG=1 (.ci/run) they fail instead.
# ---------------------------------------------------------------------------------------------

PG_SKIP_REASON = "PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skipped = 0
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        if "DOCRELAY_TEST_PG_URL not set" in str(reason):
            skipped += 1
    if skipped:
        terminalreporter.write_sep("=", "PostgreSQL", yellow=True, bold=True)
        terminalreporter.write_line(
            f"{PG_SKIP_REASON} ({skipped} tests skipped). Set DOCRELAY_TEST_PG_URL="
            "postgresql://USER:PASSWORD@HOST:5432/DB to run them; .ci/run always does.",
            yellow=True,
            bold=True,
        )
