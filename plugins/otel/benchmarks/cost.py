"""What the installed docrelay-otel plugin costs per document, side by side.

    PYTHONPATH=. .venv/bin/python plugins/otel/benchmarks/cost.py [--docs 1000] [--rounds 5]
        [--compare path/to/other/docrelay_otel.py] [--sdk]

Two measures, both on the library side of ``benchmarks.compare`` (``Relay`` with SQLite, the
eConnect plugin, the reference server answering at once, 1 worker):

- ``relay``: the same run with the plugin (autoloaded) and without it (``disabled=["otel"]``),
  alternating in rounds; the difference of the medians per document. On a shared machine the
  noise of a whole delivery (hundreds of us) hides the plugin's share: read the second.
- ``hooks``: the plugin's three hooks alone (``prepare_headers``, ``on_exchange``,
  ``on_state_change``), replayed on the arguments captured from a real delivery, in rounds;
  with ``--compare FILE`` another version of the module (e.g. ``git show
  main:plugins/otel/src/docrelay_otel/__init__.py > /tmp/otel_main.py``) alternates with it.
  ``--sdk`` configures an SDK tracer provider first (recording spans, no exporter).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import docrelay
import docrelay_otel

from benchmarks._econnect import make_docs
from benchmarks._server import ReferenceServer
from benchmarks.compare import _delivered, _documents, _relay


class _Capture:
    """Records the arguments of the plugin's three hooks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @docrelay.hookimpl
    def prepare_headers(self, request: Any, ctx: Any) -> None:
        self.calls.append(("prepare_headers", {"request": request, "ctx": ctx}))

    @docrelay.hookimpl
    def on_exchange(
        self,
        document: Any,
        request: Any,
        response: Any,
        error: Any,
        outcome: Any,
        elapsed: float,
        waited: float,
        attempt: int,
        purpose: str,
        ctx: Any,
    ) -> None:
        kwargs = {"document": document, "request": request, "response": response,
                  "error": error, "outcome": outcome, "elapsed": elapsed, "waited": waited,
                  "attempt": attempt, "purpose": purpose, "ctx": ctx}  # fmt: skip
        self.calls.append(("on_exchange", kwargs))

    @docrelay.hookimpl
    def on_state_change(self, document: Any, old: Any, new: Any, outcome: Any) -> None:
        kwargs = {"document": document, "old": old, "new": new, "outcome": outcome}
        self.calls.append(("on_state_change", kwargs))


def _run(url: str, work: Path, n: int, **kwargs: Any) -> float:
    docs = _documents(make_docs(f"c{uuid.uuid4().hex[:6]}", n))
    relay = _relay("sqlite:///" + str(work / f"{uuid.uuid4().hex[:8]}.db"), url, **kwargs)
    started = time.perf_counter()
    relay.submit_many(docs)
    relay.run_until_idle(workers=1)
    elapsed = time.perf_counter() - started
    if (got := _delivered(relay)) != n:
        raise RuntimeError(f"{got} of {n} delivered")
    relay.close()
    return elapsed / n * 1e6


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("docrelay_otel_compared", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="plugins/otel/benchmarks/cost.py")
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compare", metavar="FILE")
    p.add_argument("--sdk", action="store_true")
    a = p.parse_args(argv)
    if a.sdk:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
    versions: dict[str, Any] = {"this": docrelay_otel.default}
    if a.compare:
        versions["compared"] = _load(a.compare).default
    capture = _Capture()
    sides: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory(prefix="otel-cost-") as tmp, ReferenceServer() as srv:
        work = Path(tmp)
        _run(srv.url, work, 200, disabled=["otel"], plugins=[capture])
        for _ in range(a.rounds):
            sides["with"].append(_run(srv.url, work, a.docs))
            sides["without"].append(_run(srv.url, work, a.docs, disabled=["otel"]))
    med = {k: statistics.median(v) for k, v in sides.items()}
    print(f"relay, {a.docs} documents x {a.rounds} rounds (us per document, median):")
    for k, v in sides.items():
        print(f"  {k:8} {med[k]:7.0f}   rounds {[round(x) for x in v]}")
    print(f"  with - without: {med['with'] - med['without']:.0f} us per document")

    calls = [c for c in capture.calls if c[0] != "on_exchange" or c[1]["purpose"] == "send"]
    docs = sum(1 for c in calls if c[0] == "prepare_headers")

    def replay(plugin: Any) -> None:
        for name, kwargs in calls:
            getattr(plugin, name)(**kwargs)

    times: dict[str, list[float]] = {k: [] for k in versions}
    for plugin in versions.values():
        replay(plugin)
    for _ in range(max(a.rounds, 7)):
        for k, plugin in versions.items():
            times[k].append(timeit.timeit(lambda p=plugin: replay(p), number=5) / 5 / docs * 1e6)
    print(f"hooks alone, {docs} documents' calls replayed (us per document, median):")
    for k, v in times.items():
        print(f"  {k:8} {statistics.median(v):6.1f}   rounds {[round(x, 1) for x in v]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
