"""Loading the plugins to send imports no sandbox and no demo: ``ProviderInfo(sandbox=...,
demo=...)`` takes ``"module:attr"`` references, imported where a sandbox or the demo is
needed (``docrelay sandbox``, ``docrelay demo``, the contract kit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import docrelay
import pytest
from docrelay import ConfigError, ProviderInfo
from docrelay.sandbox import Sandbox

PROVIDERS = ("aqi", "ebh", "econnect", "procuros", "siesmart")

_PROBE = """
import json, sys
import docrelay.cli
from docrelay._host import PluginHost
host = PluginHost()
loaded = sorted(s.name for s in host.statuses() if s.status == "loaded")
def unwanted(m):
    last = m.rsplit(".", 1)[-1]
    return last in ("sandbox", "_demo", "_sandbox_http", "_sandbox_state")
print(json.dumps({"loaded": loaded, "unwanted": sorted(m for m in sys.modules if unwanted(m))}))
"""


def test_loading_every_plugin_imports_no_sandbox_and_no_demo() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out)
    assert set(PROVIDERS) <= set(seen["loaded"]), seen["loaded"]
    assert seen["unwanted"] == []


@pytest.mark.parametrize("name", PROVIDERS)
def test_the_sandbox_and_the_demo_resolve_where_they_are_needed(name: str) -> None:
    host = docrelay.PluginHost(enabled=[name])
    hooks = host.hooks(name)
    cls = hooks.provider_sandbox()
    assert isinstance(cls, type)
    assert issubclass(cls, Sandbox)
    assert callable(host.provider(name).demo)
    # The package's public names still reach the lazily imported objects.
    module = sys.modules[f"docrelay_{name}"]
    assert getattr(module, cls.__name__) is cls


def test_a_class_is_still_accepted() -> None:
    def demo(sandbox: object, webhook_url: str) -> None:
        return None

    info = ProviderInfo(name="x", sandbox=Sandbox, demo=demo)
    assert (info.sandbox, info.demo) == (Sandbox, demo)
    assert ProviderInfo(name="x").sandbox is None


def test_a_reference_is_imported_at_first_use() -> None:
    info = ProviderInfo(name="x", sandbox="docrelay.sandbox:Sandbox", demo="docrelay:Document")
    assert info.sandbox_ref == "docrelay.sandbox:Sandbox"
    assert (info.sandbox, info.demo) == (Sandbox, docrelay.Document)


@pytest.mark.parametrize("ref", ["docrelay.sandbox", "docrelay.sandbox:", ":Sandbox", "a b:c"])
def test_a_malformed_reference_is_refused_when_declared(ref: str) -> None:
    with pytest.raises(ValueError, match="module:attr"):
        ProviderInfo(name="x", sandbox=ref)


@pytest.mark.parametrize("ref", ["docrelay_no_such_module:X", "docrelay.sandbox:NoSuchSandbox"])
def test_a_reference_that_does_not_load_is_a_one_line_config_error(ref: str) -> None:
    info = ProviderInfo(name="x", sandbox=ref, demo=ref)
    with pytest.raises(ImportError, match=r"provider x: its sandbox .* cannot be loaded"):
        _ = info.sandbox

    class Plugin:
        @docrelay.hookimpl
        def provider_info(self) -> ProviderInfo:
            return info

    hooks = docrelay.PluginHost(autoload=False, plugins=[Plugin()]).hooks("x")
    with pytest.raises(ConfigError, match=r"provider x: its sandbox .* cannot be loaded") as err:
        hooks.provider_sandbox()
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"provider x: its demo .* cannot be loaded"):
        hooks.demo_batch(None, "http://127.0.0.1:9/")


_APP_RETRY = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(message)s")
import docrelay.cli
from docrelay._host import PluginHost
PluginHost()
print("prometheus before:", "prometheus_client" in sys.modules)
import stamina
calls = []
@stamina.retry(on=ValueError, attempts=2, wait_initial=0, wait_max=0, wait_jitter=0)
def flaky():
    calls.append(1)
    if len(calls) == 1:
        raise ValueError("once")
flaky()
print("prometheus after:", "prometheus_client" in sys.modules)
"""


def test_stamina_hooks_are_made_at_the_application_s_first_retry() -> None:
    """docrelay routes the engine's retries without making stamina's default hooks at import
    (they import prometheus_client); an application's own retry still reaches them: its
    warning on the ``stamina`` logger, and the Prometheus counter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    out = subprocess.run(
        [sys.executable, "-c", _APP_RETRY], env=env, capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "prometheus before: False"
    assert any(line.startswith("stamina stamina.retry_scheduled") for line in lines), out
    assert lines[-1] == "prometheus after: True"
