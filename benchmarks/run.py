"""Run every benchmark, print a table, write ``benchmarks/results/latest.json``.

    .venv/bin/python -m benchmarks            # from the repository root
    .venv/bin/python benchmarks/run.py        # the same
    .venv/bin/python -m benchmarks B1 B4      # some of them

B6 (PostgreSQL, ``benchmarks/b6_postgres_workers.py``) runs when that file exists and the
server named by ``DOCRELAY_BENCH_PG_URL`` / ``DOCRELAY_TEST_PG_URL`` is reachable.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
MODULES = {
    "B1": "benchmarks.b1_overhead",
    "B2": "benchmarks.b2_workers",
    "B3": "benchmarks.b3_rate_limit",
    "B4": "benchmarks.b4_retries",
    "B5": "benchmarks.b5_store_scale",
}


def _b6() -> dict[str, Any]:
    path = ROOT / "benchmarks" / "b6_postgres_workers.py"
    url = os.environ.get("DOCRELAY_BENCH_PG_URL") or os.environ.get("DOCRELAY_TEST_PG_URL")
    base = {"id": "B6", "what": "PostgreSQL store: 4 worker processes vs 1", "target": ">= 3.5x"}
    if not path.exists():
        return {**base, "pass": None, "figure_text": "not run: b6_postgres_workers.py missing"}
    if not url:
        return {**base, "pass": None, "figure_text": "not run: DOCRELAY_TEST_PG_URL not set"}
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5):
            pass
    except Exception as exc:  # any failure to connect means "not run"
        return {**base, "pass": None, "figure_text": f"not run: PostgreSQL unreachable ({exc})"}
    mod = importlib.import_module("benchmarks.b6_postgres_workers")
    res = mod.run()
    return {
        **base,
        **res,
        "figure": res.get("ratio"),
        "figure_text": f"{res.get('ratio')}x",
        "pass": res.get("met"),
    }


def main(argv: list[str]) -> int:
    import logging

    from benchmarks._common import machine

    # B4's in-process retries would log one line each.
    logging.getLogger("stamina").setLevel(logging.ERROR)

    wanted = [a.upper() for a in argv] or [*MODULES, "B6"]
    results: list[dict[str, Any]] = []
    started = time.time()
    for bid in wanted:
        print(f"running {bid} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            res = _b6() if bid == "B6" else importlib.import_module(MODULES[bid]).run()
        except Exception as exc:  # report it and go on with the others
            traceback.print_exc()
            res = {"id": bid, "pass": False, "figure_text": f"error: {exc}", "target": "?"}
        res["wall_seconds"] = round(time.perf_counter() - t, 1)
        results.append(res)
    m = machine()
    out = {
        "machine": m,
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks", *argv]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nmachine: {m['nproc']} x {m['cpu']}, Python {m['python']}")
    print("| id | figure | target | result |\n|---|---|---|---|")
    for r in results:
        verdict = {True: "pass", False: "FAIL", None: "not run"}[r.get("pass")]
        print(f"| {r['id']} | {r.get('figure_text', '')} | {r.get('target', '')} | {verdict} |")
    print(f"\nwritten: {RESULTS / 'latest.json'}")
    return 0 if all(r.get("pass") is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
