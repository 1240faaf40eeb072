"""Profile the docrelay library side of ``benchmarks.compare`` with cProfile.

    .venv/bin/python -m benchmarks profile [--docs 2000] [--workers 1] [--top 25]

The same setup as the ``docrelay`` side (``Relay`` with SQLite, the eConnect plugin, the
reference server answering at once, in its own process): one warm-up run, then ``submit_many``
and ``run_until_idle`` of ``--docs`` documents under cProfile. Prints the top functions by
cumulative time with the time per document (cProfile's own overhead inflates every figure,
calls into C the least), and the wall time without the profiler of a second, unprofiled run
for scale.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._econnect import make_docs
from ._server import ReferenceServer
from .compare import _delivered, _documents, _relay


def _once(url: str, db: Path, n: int, prefix: str, workers: int) -> float:
    docs = _documents(make_docs(prefix, n))
    started = time.perf_counter()
    relay = _relay("sqlite:///" + str(db), url)
    relay.submit_many(docs)
    relay.run_until_idle(workers=workers)
    elapsed = time.perf_counter() - started
    if (got := _delivered(relay)) != n:
        raise RuntimeError(f"{got} of {n} delivered")
    relay.close()
    return elapsed


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks profile")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--callees",
        action="append",
        default=[],
        metavar="FUNCTION",
        help="also break down the direct callees of FUNCTION (repeatable)",
    )
    a = p.parse_args(list(argv))
    if a.docs < 1 or a.workers < 1 or a.top < 1:
        print("error: --docs, --workers and --top must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="docrelay-profile-") as tmp, ReferenceServer() as srv:
        work = Path(tmp)
        _once(srv.url, work / "warm.db", 50, "warm", a.workers)
        plain = _once(srv.url, work / "plain.db", a.docs, "plain", a.workers)
        prof = cProfile.Profile()
        docs = _documents(make_docs("prof", a.docs))
        prof.enable()
        relay = _relay("sqlite:///" + str(work / "prof.db"), srv.url)
        relay.submit_many(docs)
        relay.run_until_idle(workers=a.workers)
        prof.disable()
        relay.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(a.top)
    total = sum(v[3] for k, v in stats.stats.items() if k[2] == "run_until_idle")  # type: ignore[attr-defined]
    print(
        f"{a.docs} documents, {a.workers} worker(s); without the profiler "
        f"{plain / a.docs * 1e6:.0f} us per document ({a.docs / plain:.0f} docs/s); "
        f"profiled run_until_idle {total / a.docs * 1e6:.0f} us per document\n"
    )
    print(f"{'cumulative us/doc':>18} {'calls/doc':>9}  function")
    for (file, line, fn), (_cc, nc, _tt, ct, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: -kv[1][3],
    )[: a.top]:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"{ct / a.docs * 1e6:18.0f} {nc / a.docs:9.2f}  {fn} ({where})")
    print(f"\n{'own us/doc':>18} {'calls/doc':>9}  function (by own time)")
    for (file, line, fn), (_cc, nc, tt, _ct, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: -kv[1][2],
    )[:15]:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"{tt / a.docs * 1e6:18.0f} {nc / a.docs:9.2f}  {fn} ({where})")
    for wanted in a.callees:
        for (file, line, fn), value in stats.stats.items():  # type: ignore[attr-defined]
            if fn != wanted:
                continue
            own, total = value[2], value[3]
            print(
                f"\n{fn} ({Path(file).name}:{line}): {total / a.docs * 1e6:.0f} us/doc, "
                f"{own / a.docs * 1e6:.0f} of them its own; callees:"
            )
            callees = [
                (v[3], k)
                for k, v in stats.stats.items()  # type: ignore[attr-defined]
                if (file, line, fn) in v[4]
            ]
            for _, k in sorted(callees, reverse=True):
                edge = stats.stats[k][4][(file, line, fn)]  # type: ignore[attr-defined]
                print(
                    f"{edge[3] / a.docs * 1e6:18.0f} {edge[1] / a.docs:9.2f}  {k[2]} "
                    f"({Path(k[0]).name}:{k[1]})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
