"""The plugin host: discovery through (faked) entry points, broken plugins reported and left
out, allow- and block-lists, per-provider isolation of provider hooks over real HTTP, and
middleware plugins that see every delivery."""

from __future__ import annotations

import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import (
    ConfigError,
    Context,
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    PluginHost,
    TransportError,
    hookimpl,
)
from docrelay._host import BUILTINS

# -- discovery --------------------------------------------------------------------------------

GOOD = """
from acme_testprovider import AcmePlugin
plugin = AcmePlugin("{provider}")
"""
BROKEN_IMPORT = """
import docrelay_no_such_module_anywhere
"""
UNKNOWN_HOOK = """
from docrelay import hookimpl

@hookimpl
def not_a_docrelay_hook(document):
    return None
"""
BAD_SIGNATURE = """
from docrelay import hookimpl

@hookimpl
def build_request(document, ctx, surprise):
    return None
"""
INFO_RAISES = """
from docrelay import hookimpl

@hookimpl
def provider_info():
    raise RuntimeError("provider_info exploded")
"""
MIDDLEWARE = """
from docrelay import hookimpl
seen = []

@hookimpl
def on_state_change(document, old, new, outcome):
    seen.append((document.id, new))
"""


@pytest.fixture
def fake_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, tuple[str, str]]], None]]:
    """``fake_plugins({"ep_name": (source, "provider-name"|"")})``: one module and one
    distribution (``docrelay-<ep_name>``) per plugin, found through the faked entry points."""
    tag = uuid.uuid4().hex[:8]
    modules: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(plugins: dict[str, tuple[str, str]]) -> None:
        for name, (source, provider) in plugins.items():
            module = f"fakeplugin_{name}_{tag}"
            modules.append(module)
            (tmp_path / f"{module}.py").write_text(
                textwrap.dedent(source.format(provider=provider)), encoding="utf-8"
            )
            attr = ":plugin" if "plugin =" in source else ""
            dist = tmp_path / f"docrelay_{name}-1.2.3.dist-info"
            dist.mkdir()
            (dist / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: docrelay-{name}\nVersion: 1.2.3\n",
                encoding="utf-8",
            )
            (dist / "entry_points.txt").write_text(
                f"[docrelay.plugins]\n{name} = {module}{attr}\n", encoding="utf-8"
            )

        def entry_points(*, group: str) -> list[EntryPoint]:
            return [
                ep
                for d in distributions(path=[str(tmp_path)])
                for ep in d.entry_points
                if ep.group == group
            ]

        monkeypatch.setattr("docrelay._host.entry_points", entry_points)

    yield install
    for m in modules:
        sys.modules.pop(m, None)


def _by_name(host: PluginHost) -> dict[str, Any]:
    return {s.name: s for s in host.statuses()}


def test_broken_plugins_are_reported_and_left_out(
    fake_plugins: Callable[[dict[str, tuple[str, str]]], None],
) -> None:
    """Import failure, unknown hook, bad hook signature, provider_info raising and a second
    plugin for the same provider: each is reported with name, distribution and error, and
    left out, while the good plugins load."""
    fake_plugins(
        {
            "alpha": (GOOD, "alpha"),
            "broken": (BROKEN_IMPORT, ""),
            "unknownhook": (UNKNOWN_HOOK, ""),
            "badsig": (BAD_SIGNATURE, ""),
            "inforaises": (INFO_RAISES, ""),
            "zdup": (GOOD, "alpha"),
            "mw": (MIDDLEWARE, ""),
        }
    )
    host = PluginHost(environ={})
    st = _by_name(host)

    assert list(host.providers) == ["alpha"]
    alpha = st["alpha"]
    assert (alpha.status, alpha.kind, alpha.distribution, alpha.version, alpha.provider) == (
        "loaded", "provider", "docrelay-alpha", "1.2.3", "alpha")  # fmt: skip
    assert (st["mw"].status, st["mw"].kind) == ("loaded", "middleware")
    assert (st[BUILTINS].status, st[BUILTINS].kind) == ("loaded", "builtin")
    expected_errors = {
        "broken": "import failed: ModuleNotFoundError",
        "unknownhook": "unknown hook",
        "badsig": "invalid",
        "inforaises": "provider_info failed: provider_info exploded",
        "zdup": "provider 'alpha' is already provided",
    }
    for name, error in expected_errors.items():
        assert ("error", f"docrelay-{name}") == (st[name].status, st[name].distribution)
        assert error in (st[name].error or ""), st[name]
    # the left-out plugins are really gone from the hook machinery
    names = {host.pm.get_name(p) for p in host.pm.get_plugins()}
    assert {"alpha", "mw", BUILTINS} == names
    leftover = getattr(host.pm.hook, "not_a_docrelay_hook", None)
    assert leftover is None or leftover.get_hookimpls() == []
    host.pm.check_pending()  # nothing unknown is left registered


def test_disabled_plugins_by_environment_and_allow_list(
    fake_plugins: Callable[[dict[str, tuple[str, str]]], None],
) -> None:
    """DOCRELAY_DISABLED_PLUGINS blocks; an allow-list leaves out everything else."""
    fake_plugins({"alpha": (GOOD, "alpha"), "beta": (GOOD, "beta"), "gamma": (GOOD, "gamma")})

    blocked = PluginHost(environ={"DOCRELAY_DISABLED_PLUGINS": " beta , gamma"})
    assert list(blocked.providers) == ["alpha"]
    assert {n: s.status for n, s in _by_name(blocked).items() if n in ("beta", "gamma")} == {
        "beta": "blocked",
        "gamma": "blocked",
    }

    allowed = PluginHost(enabled=["gamma"], disabled=["alpha"], environ={})
    assert list(allowed.providers) == ["gamma"]
    st = _by_name(allowed)
    assert (st["alpha"].status, st["beta"].status) == ("blocked", "disabled")

    off = PluginHost(environ={"DOCRELAY_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert dict(off.providers) == {}


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_builtins_cannot_be_disabled(how: str) -> None:
    """The built-in classifier and key are essential."""
    disabled = [BUILTINS] if how == "argument" else []
    environ = {"DOCRELAY_DISABLED_PLUGINS": BUILTINS} if how == "environment" else {}
    with pytest.raises(ConfigError, match="cannot be disabled"):
        PluginHost(autoload=False, disabled=disabled, environ=environ)


def test_unknown_provider_names_the_known_ones() -> None:
    """Asking for a provider nobody provides is a ConfigError listing the known ones."""
    host = PluginHost(autoload=False, plugins=[AcmePlugin("acme")], environ={})

    with pytest.raises(ConfigError, match="unknown provider 'nope' \\(known: acme\\)"):
        host.hooks("nope")


# -- isolation over real HTTP -----------------------------------------------------------------


class SpyAcme(AcmePlugin):
    """An Acme plugin that records the traffic its provider hooks see."""

    def __init__(self, name: str, seen: list[tuple[str, str, str]]) -> None:
        super().__init__(name)
        self.seen = seen

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        self.seen.append((self.name, "build_request", document.provider))
        return super().build_request(document, ctx)

    @hookimpl
    def classify_response(
        self, response: HttpResponse | None, error: TransportError | None, ctx: Context
    ) -> Outcome | None:
        self.seen.append((self.name, "classify_response", response.url if response else "-"))
        return super().classify_response(response, error, ctx)


class Middleware:
    """A middleware plugin: no provider_info; sees every delivery."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []
        self.headers_for: list[str] = []
        self._lock = threading.Lock()

    @hookimpl
    def on_state_change(self, document: Document, old: str, new: str) -> None:
        with self._lock:
            self.changes.append((document.provider, document.id, new))

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        with self._lock:
            self.headers_for.append(ctx.provider.name)
        return {"X-Trace-Id": f"trace-{ctx.provider.name}"}


class RaisingMiddleware:
    """A middleware plugin whose on_state_change raises."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_state_change(self, document: Document, new: str) -> None:
        self.calls += 1
        raise RuntimeError("write-back failed")


def test_provider_hooks_see_only_their_own_traffic(
    make_relay: Callable[..., Any],
    make_sandbox: Callable[..., AcmeSandbox],
    acme: Any,
) -> None:
    """Two Acme providers with their own sandboxes: each classifier and request builder sees
    only its own provider's documents and responses; a middleware plugin sees both."""
    seen: list[tuple[str, str, str]] = []
    sbx_a, sbx_b = make_sandbox(), make_sandbox()
    mw = Middleware()
    relay = make_relay(
        providers={"acme": acme.settings(sbx_a), "beta": acme.settings(sbx_b)},
        plugins=[SpyAcme("acme", seen), SpyAcme("beta", seen), mw],
    )
    for i in range(3):
        relay.submit(acme.doc(f"a-{i}", provider="acme"))
        relay.submit(acme.doc(f"b-{i}", provider="beta"))
    relay.run_until_idle()

    assert {"delivered"} == {s.state.value for s in relay.statuses()}
    assert (len(acme.posts(sbx_a)), len(acme.posts(sbx_b))) == (3, 3)
    assert sorted(
        [("acme", "build_request", "acme")] * 3 + [("beta", "build_request", "beta")] * 3
    ) == sorted(s for s in seen if s[1] == "build_request")
    classified = [s for s in seen if s[1] == "classify_response"]
    assert len(classified) == 6
    for name, _, url in classified:
        own = sbx_a if name == "acme" else sbx_b
        assert url.startswith(own.url + "/"), (name, url)
    assert {p: mw.headers_for.count(p) for p in ("acme", "beta")} == {"acme": 3, "beta": 3}
    assert {"trace-acme"} == {acme.header(r, "X-Trace-Id") for r in acme.posts(sbx_a)}
    assert {"trace-beta"} == {acme.header(r, "X-Trace-Id") for r in acme.posts(sbx_b)}
    delivered = sorted((p, d) for p, d, new in mw.changes if new == "delivered")
    assert [("acme", f"a-{i}") for i in range(3)] + [("beta", f"b-{i}") for i in range(3)] == (
        delivered
    )


def test_raising_middleware_is_disabled_and_delivery_completes(
    make_relay: Callable[..., Any], sandbox: AcmeSandbox, acme: Any
) -> None:
    """A middleware that raises in on_state_change is disabled after its first exception and
    reported by the host; the other middleware and the deliveries carry on."""
    bad, good = RaisingMiddleware(), Middleware()
    relay = make_relay(sandbox, plugins=[AcmePlugin(), bad, good])
    relay.submit(acme.doc("d-1"))
    relay.submit(acme.doc("d-2"))
    relay.run_until_idle()

    assert {s.id: s.state.value for s in relay.statuses()} == {
        "d-1": "delivered",
        "d-2": "delivered",
    }
    assert bad.calls == 1
    status = {s.name: s for s in relay.plugins()}["RaisingMiddleware-1"]
    assert (status.status, status.error) == ("error", "disabled after an exception")
    assert [c for c in good.changes if c[2] == "delivered"] == [
        ("acme", "d-1", "delivered"),
        ("acme", "d-2", "delivered"),
    ]
    assert {s.name: s for s in relay.plugins()}["Middleware-2"].status == "loaded"


def test_raising_middleware_in_prepare_headers_is_disabled(
    make_relay: Callable[..., Any], sandbox: AcmeSandbox, acme: Any
) -> None:
    """A tracing middleware whose prepare_headers raises is left out; the document goes."""

    class BadHeaders:
        @hookimpl
        def prepare_headers(self, request: HttpRequest) -> dict[str, str]:
            raise KeyError("tracer not configured")

    relay = make_relay(sandbox, plugins=[AcmePlugin(), BadHeaders()])
    relay.submit(acme.doc("d-1"))
    relay.run_until_idle()

    assert relay.status("d-1").state.value == "delivered"
    assert {s.name: s for s in relay.plugins()}["BadHeaders-1"].status == "error"


# -- hook callers resolved once ---------------------------------------------------------------


def _ctx(host: PluginHost, doc: Document) -> Context:
    info = host.provider("acme")
    return Context(
        provider=info,
        settings={},
        base_url="http://127.0.0.1:9",
        environment=None,
        services=None,
        document=doc,
    )


def test_hook_callers_are_resolved_once_and_again_after_a_disable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider's callers are built once (no pluggy subset caller and no pluggy dispatch per
    call); a middleware disabled after it raised is left out of the next call made through a
    facade taken before it was disabled."""
    bad, good = RaisingMiddleware(), Middleware()
    host = PluginHost(autoload=False, plugins=[AcmePlugin("acme"), bad, good], environ={})
    hooks = host.hooks("acme")
    made: list[str] = []
    subset = host.pm.subset_hook_caller

    def counting(name: str, remove_plugins: Any) -> Any:
        made.append(name)
        return subset(name, remove_plugins)

    monkeypatch.setattr(host.pm, "subset_hook_caller", counting)
    dispatched: list[str] = []
    hookexec = host.pm._inner_hookexec

    def spying(name: str, *args: Any) -> Any:
        dispatched.append(name)
        return hookexec(name, *args)

    monkeypatch.setattr(host.pm, "_inner_hookexec", spying)
    doc = Document(id="d-1", provider="acme", payload=b"{}")
    ctx = _ctx(host, doc)
    for _ in range(3):
        assert hooks.idempotency_key(doc, ctx)
        assert hooks.build_request(doc, ctx) is not None
    assert (made, dispatched) == ([], [])

    hooks.on_state_change(doc, "queued", "sending", None, ctx)
    assert bad.calls == 1
    assert host.hooks("acme") is not hooks  # the host's cache was cleared by the disable
    hooks.on_state_change(doc, "sending", "delivered", None, ctx)
    assert bad.calls == 1  # disabled after its first exception: not called again
    assert [c[2] for c in good.changes] == ["sending", "delivered"]


def test_a_hook_wrapper_keeps_pluggys_own_call_path() -> None:
    """A plugin that wraps a provider hook is called as pluggy calls it (before and after
    the provider's implementation), not by the resolved fast path."""
    order: list[str] = []

    class Wrapping:
        @hookimpl(wrapper=True)
        def idempotency_key(self, document: Document) -> Iterator[None]:
            order.append("before")
            result = yield
            order.append(f"after:{bool(result)}")
            return result

    host = PluginHost(autoload=False, plugins=[AcmePlugin("acme"), Wrapping()], environ={})
    doc = Document(id="d-1", provider="acme", payload=b"{}")
    ctx = _ctx(host, doc)
    assert host.hooks("acme").idempotency_key(doc, ctx)
    assert order == ["before", "after:True"]
