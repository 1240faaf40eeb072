"""Print the import graph of the docrelay core package and its cycles (AST, no import).

    python scripts/import_graph.py [--cycles]

Imports under ``if TYPE_CHECKING:`` are not edges (they never run). Imports inside
functions are edges: they run, later.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "core" / "src" / "docrelay"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(path: Path, modules: set[str]) -> set[str]:
    """The docrelay modules *path* imports at run time."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(0, node.level - 1)):
                base = base.rpartition(".")[0]
            mod = node.module or ""
            target = (f"{base}.{mod}" if mod else base) if node.level else mod
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        for name in names:
            known = name
            while known and known not in modules:
                known = known.rpartition(".")[0]
            # A module's own ancestor packages are initialised before it anyway (``from .
            # import schema`` names the package only to reach its submodule): no edge.
            if known and known != me and not me.startswith(known + "."):
                found.add(known)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) - {"docrelay"} for f in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    g = graph()
    if "--cycles" not in sys.argv:
        for m, deps in sorted(g.items()):
            print(f"{m}: {', '.join(sorted(deps)) or '-'}")
    found = cycles(g)
    print(f"{len(found)} cycle(s)")
    for c in found:
        print("  " + " <-> ".join(c))
