"""B6: 1 worker process against 4 worker processes on one PostgreSQL store.

The provider answers every ``POST /documents`` after 20 ms (the Acme sandbox with the fault
``slow@1:0.02``), so a worker spends most of its time waiting on the network, which is the
case a fleet is for. Both runs happen side by side in one invocation, on the same server and
the same machine, and the figure is their ratio (target: at least 3.5x).

    export DOCRELAY_TEST_PG_URL=postgresql://user:pw@127.0.0.1:5432/db
    .venv/bin/python benchmarks/b6_postgres_workers.py

``DOCRELAY_BENCH_PG_URL`` takes precedence over ``DOCRELAY_TEST_PG_URL``;
``DOCRELAY_B6_DOCS`` sets the documents per run (default 600). Each run uses a fresh schema,
dropped afterwards. Results: a table row on stdout and ``benchmarks/results/b6.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from acme_testprovider import AcmeSandbox
from docrelay import Document
from docrelay._store import iter_chunks, open_store

RESULTS = Path(__file__).resolve().parent / "results" / "b6.json"
SERVER_DELAY = 0.020
TARGET = 3.5

#: One worker process: waits for "go" on stdin, delivers until nothing is due, prints the
#: time it finished and how many claims it processed.
WORKER = r"""
import json, os, sys, time
from docrelay import Relay
from acme_testprovider import AcmePlugin

cfg = json.loads(os.environ["DOCRELAY_B6"])
relay = Relay(
    cfg["store"], store_options={"schema": cfg["schema"]},
    providers={"acme": {"base_url": cfg["url"], "client_id": "acme-client",
                        "client_secret": "acme-secret-value"}},
    engine={"batch_size": 4}, plugins=[AcmePlugin()], autoload=False,
)
relay.store.next_due()  # connect before the clock starts
print("ready", flush=True)
sys.stdin.readline()
n = 0
while True:
    n += relay.run_until_idle()
    if relay.store.next_due() is None:
        break
    time.sleep(0.01)
print(json.dumps({"finished": time.time(), "claims": n}), flush=True)
relay.close()
"""


def _pg_url() -> str:
    url = os.environ.get("DOCRELAY_BENCH_PG_URL") or os.environ.get("DOCRELAY_TEST_PG_URL")
    if not url:
        raise SystemExit(
            "B6 needs a PostgreSQL server: set DOCRELAY_BENCH_PG_URL or DOCRELAY_TEST_PG_URL"
        )
    return url


def _one_run(url: str, sandbox_url: str, workers: int, docs: int) -> dict[str, Any]:
    import psycopg

    schema = f"bench_b6_{uuid.uuid4().hex[:8]}"
    store = open_store(url, schema=schema, heartbeat=False)
    try:
        batch = [
            Document(
                id=f"b6-{workers}w-{i:06d}",
                provider="acme",
                content_type="application/json",
                payload=json.dumps({"n": i}).encode(),
            )
            for i in range(docs)
        ]
        for chunk in iter_chunks(batch, 1000):
            store.submit_many(chunk, time.time())
        env = {
            **os.environ,
            "DOCRELAY_B6": json.dumps({"store": url, "schema": schema, "url": sandbox_url}),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a B6 worker did not start")
        started = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"a B6 worker failed (exit {p.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        elapsed = max(r["finished"] for r in reports) - started
        counts = store.counts()
        if counts.get("delivered", 0) != docs:
            raise RuntimeError(f"B6: not every document was delivered: {counts}")
    finally:
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return {
        "workers": workers,
        "documents": docs,
        "seconds": round(elapsed, 3),
        "docs_per_second": round(docs / elapsed, 1),
        "claims_per_worker": [r["claims"] for r in reports],
    }


def run() -> dict[str, Any]:
    """Run B6 and return its figures (also written to ``benchmarks/results/b6.json``)."""
    url = _pg_url()
    docs = int(os.environ.get("DOCRELAY_B6_DOCS", "600"))
    sandbox = AcmeSandbox(faults=[f"slow@1:{SERVER_DELAY}"])
    sandbox.start()
    try:
        one = _one_run(url, sandbox.url, 1, docs)
        sandbox.reset()
        four = _one_run(url, sandbox.url, 4, docs)
    finally:
        sandbox.stop()
    ratio = four["docs_per_second"] / one["docs_per_second"]
    result = {
        "benchmark": "B6",
        "title": "PostgreSQL store: 1 worker process against 4, server answering after 20 ms",
        "server_delay_seconds": SERVER_DELAY,
        "one_worker": one,
        "four_workers": four,
        "ratio": round(ratio, 2),
        "target": TARGET,
        "met": ratio >= TARGET,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


def row(result: dict[str, Any]) -> str:
    one, four = result["one_worker"], result["four_workers"]
    return (
        f"| B6 | PostgreSQL, 20 ms server, {one['documents']} documents | "
        f"1 worker: {one['docs_per_second']} docs/s | "
        f"4 workers: {four['docs_per_second']} docs/s | "
        f"{result['ratio']}x (target {TARGET}x: {'met' if result['met'] else 'NOT met'}) |"
    )


if __name__ == "__main__":
    res = run()
    print("| benchmark | setup | 1 worker | 4 workers | ratio |")
    print("|---|---|---|---|---|")
    print(row(res))
    sys.exit(0 if res["met"] else 1)
