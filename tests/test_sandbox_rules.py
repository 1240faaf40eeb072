"""Rules for the provider sandboxes: they are built on the public extension points of
:class:`docrelay.sandbox.Sandbox` only, each is exported from one place
(``docrelay_<name>.sandbox``), and the core sandbox knows no provider."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from pathlib import Path

import docrelay.sandbox
import pytest
from docrelay import PluginHost
from docrelay.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_FILES = sorted(ROOT.glob("plugins/*/src/*/sandbox.py"))
#: Plugins that declare a provider (a middleware plugin such as otel has no sandbox).
PROVIDERS = sorted(
    ep.name
    for ep in importlib.metadata.entry_points(group="docrelay.plugins")
    if importlib.util.find_spec(f"docrelay_{ep.name}.sandbox") is not None
)


def _docrelay_private_names() -> tuple[frozenset[str], frozenset[str]]:
    """(private methods of :class:`Sandbox`, private attribute names of every class in
    :mod:`docrelay.sandbox`, instance attributes included)."""
    methods = {
        n for n, _ in inspect.getmembers(Sandbox) if n.startswith("_") and not n.startswith("__")
    }
    attributes = set(methods) | set(vars(Sandbox()))
    for _, cls in inspect.getmembers(docrelay.sandbox, inspect.isclass):
        if cls.__module__.startswith("docrelay."):
            attributes |= {n for n in vars(cls) if n.startswith("_")}
    for obj in (docrelay.sandbox.TokenIssuer(1.0), docrelay.sandbox.SlidingWindow(1, 1.0)):
        attributes |= set(vars(obj))
    attributes |= set(vars(docrelay.sandbox.IdempotencyKeys()))
    private = {n for n in attributes if n.startswith("_") and not n.startswith("__")}
    return frozenset(methods), frozenset(private)


def private_uses(source: str) -> list[str]:
    """Where *source* overrides a private method of the docrelay sandbox base, touches a
    private attribute of docrelay's sandbox classes, or imports a private docrelay name."""
    methods, private = _docrelay_private_names()
    found: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    item.name in methods
                ):
                    found.append(f"{node.lineno}: {node.name} overrides {item.name}")
        elif isinstance(node, ast.Attribute) and node.attr in private:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("docrelay"):
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                found.append(f"{node.lineno}: from {module}")
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name[0] == "_"]
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("docrelay.")
                and any(p.startswith("_") for p in a.name.split("."))
            ]
    return found


def test_there_are_sandboxes_to_check() -> None:
    assert len(SANDBOX_FILES) >= 6
    assert len(PROVIDERS) >= 5


def test_the_scan_finds_what_it_forbids() -> None:
    """The scan itself: an override of ``_serve``, the base's private fault list and
    routes, a private import, all found; a subclass's own private names are its business."""
    bad = (
        "from docrelay.sandbox import Sandbox, _Server\n"
        "class S(Sandbox):\n"
        "    def _serve(self, request):\n"
        "        with self.lock:\n"
        "            return self._faults or self._routes\n"
        "    def _own(self):\n"
        "        return self._own_state\n"
    )
    assert private_uses(bad) == [
        "1: import _Server",
        "2: S overrides _serve",
        "5: ._faults",
        "5: ._routes",
    ]


@pytest.mark.parametrize("path", SANDBOX_FILES, ids=lambda p: p.parts[-4])
def test_plugin_sandbox_uses_only_public_extension_points(path: Path) -> None:
    """No plugin sandbox overrides a private method or touches a private attribute of
    docrelay's sandbox classes (issue 11, item 6)."""
    assert private_uses(path.read_text(encoding="utf-8")) == []


def test_core_sandbox_names_no_provider() -> None:
    """The base class knows no provider's header or name: each sandbox declares its own."""
    core = ROOT / "core" / "src" / "docrelay"
    source = "".join(
        p.read_text(encoding="utf-8") for p in (core / "sandbox.py", *core.glob("_sandbox_*.py"))
    )
    words = [
        "X-B2B", "ProviderKey", "ProducerId", "Subscription-Key", "X-Api-Key", "X-EConnect",
        "X-Acme", "OperationId", "InvoiceType", *PROVIDERS, "acme",
    ]  # fmt: skip
    found = [w for w in words if re.search(re.escape(w), source, re.IGNORECASE)]
    assert found == []


def test_the_reference_test_provider_is_not_in_the_core_package() -> None:
    """Acme lives in the test-only distribution ``tests/acme``, not in ``docrelay``."""
    core = ROOT / "core" / "src" / "docrelay"
    assert not (core / "_acme.py").exists()
    assert [p.name for p in core.rglob("*.py") if "class AcmeSandbox" in p.read_text()] == []
    assert not hasattr(importlib.import_module("docrelay.testing"), "AcmeSandbox")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_sandbox_is_exported_from_its_plugins_sandbox_module(provider: str) -> None:
    """``docrelay_<name>.sandbox`` exports exactly one sandbox class, the one the plugin
    declares, named after the provider (issue 12: one place per plugin)."""
    module = importlib.import_module(f"docrelay_{provider}.sandbox")
    exported = [
        getattr(module, n)
        for n in module.__all__
        if isinstance(getattr(module, n), type) and issubclass(getattr(module, n), Sandbox)
    ]
    declared = PluginHost().hooks(provider).provider_sandbox()
    assert declared is not None
    assert exported == [declared]
    assert declared.name == provider
    assert declared.__name__.lower() == f"{provider}sandbox"
