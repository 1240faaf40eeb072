"""The command line and the demo use the public :class:`docrelay.Relay` only, and the core
has no import cycle outside the store (scripts/import_graph.py)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
CORE = ROOT / "core" / "src" / "docrelay"
FACADE_USERS = [*sorted((CORE / "cli").glob("*.py")), CORE / "_demo.py"]
INNARDS = {"engine", "store", "host"}


def _graph_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
    assert spec
    assert spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cli_and_demo_never_reach_past_the_relay() -> None:
    """``relay.engine``, ``relay.store`` and ``relay.host`` are the relay's innards: the CLI
    and the demo ask the Relay (explain, counts, notifications, provider info, requeue_many)."""
    found = []
    for path in FACADE_USERS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in INNARDS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert found == []


def test_cli_modules_stay_small() -> None:
    for path in sorted((CORE / "cli").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 500, path


def test_no_import_cycles() -> None:
    """cli <-> _demo, _relay <-> _wsgi and _store <-> _sqlite <-> _postgres are gone: the
    core's modules import each other without a cycle."""
    g = _graph_module()
    assert g.cycles(g.graph()) == []


def test_import_graph_sees_a_cycle() -> None:
    g = _graph_module()
    assert g.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
