"""Where the time of a docrelay process on PostgreSQL goes (``--pg`` of compare, profiled).

Runs the ``docrelay-pg`` side of ``benchmarks.compare --pg`` once: P processes of ``Relay``
(1 worker each) on one fresh PostgreSQL schema against the reference server answering after
``--delay`` seconds. Each worker counts, around its ``run_until_idle``, the store's
transactions and statements (and their wall time, round trips included), the HTTP time,
and optionally profiles itself with cProfile (``--cprofile``: the top functions of worker 0
by cumulative wall time are printed).

    DOCRELAY_TEST_PG_URL=postgresql://... .venv/bin/python -m benchmarks.pg_profile \
        --procs 4 --docs 1000 --delay 0.02

Counts per document do not depend on the machine's load; times do (the load average is
printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ._econnect import make_docs, provider_settings
from ._server import ReferenceServer

ROOT = Path(__file__).resolve().parent.parent

_WORKER = r"""
import cProfile, io, json, os, pstats, sys, time
from collections import Counter
import psycopg
from docrelay import Relay
from docrelay._store import postgres as pgmod
from docrelay import _transport

cfg = json.loads(os.environ["BENCH_PG_PROFILE"])
if cfg["shared"]:  # the shared SQL of every store instead of the PostgreSQL store's own
    from docrelay._store.shared import SQLStore
    for name in ("claim", "apply_many"):
        if name in vars(pgmod.PostgresStore):
            setattr(pgmod.PostgresStore, name, getattr(SQLStore, name))
relay = Relay(store=cfg["store"], store_options=cfg["options"],
              providers={"econnect": cfg["provider"]})
relay.statuses(state="delivered")
counts = Counter()
times = Counter()

orig_tx = pgmod.PostgresStore._tx
from contextlib import contextmanager

@contextmanager
def tx(self, write=True):
    where = sys._getframe(2).f_code.co_name
    t0 = time.perf_counter()
    with orig_tx(self, write) as cur:
        t1 = time.perf_counter()
        yield cur
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    k = ("tx_write:" if write else "tx_read:") + where
    counts[k] += 1
    times[k] += t3 - t0
    if write:
        counts["tx_write:begin"] += 1
        times["tx_write:begin"] += t1 - t0
        counts["tx_write:commit"] += 1
        times["tx_write:commit"] += t3 - t2

pgmod.PostgresStore._tx = tx

if hasattr(pgmod.PostgresStore, "_script"):
    orig_script = pgmod.PostgresStore._script

    def script(self, statements):
        where = sys._getframe(2).f_code.co_name
        t0 = time.perf_counter()
        try:
            return orig_script(self, statements)
        finally:
            k = "script:" + where
            counts[k] += 1
            counts["script_statements"] += len(statements)
            times[k] += time.perf_counter() - t0

    pgmod.PostgresStore._script = script

orig_exec = psycopg.Cursor.execute
def execute(self, query, params=None, **kw):
    t0 = time.perf_counter()
    try:
        return orig_exec(self, query, params, **kw)
    finally:
        counts["statements"] += 1
        times["statements"] += time.perf_counter() - t0
        q = str(query).split()[0].upper() if not hasattr(query, "as_string") else "SQL"
        counts["stmt_" + q] += 1
psycopg.Cursor.execute = execute

orig_many = psycopg.Cursor.executemany
def executemany(self, query, params_seq, **kw):
    t0 = time.perf_counter()
    try:
        return orig_many(self, query, params_seq, **kw)
    finally:
        counts["executemany"] += 1
        times["executemany"] += time.perf_counter() - t0
psycopg.Cursor.executemany = executemany

orig_send = _transport.Transport.send
def send(self, *a, **kw):
    t0 = time.perf_counter()
    try:
        return orig_send(self, *a, **kw)
    finally:
        counts["http"] += 1
        times["http"] += time.perf_counter() - t0
_transport.Transport.send = send

print("ready", flush=True)
sys.stdin.readline()
prof = cProfile.Profile() if cfg["cprofile"] else None
t0 = time.perf_counter()
cpu0 = time.process_time()
if prof:
    prof.enable()
n = relay.run_until_idle()
if prof:
    prof.disable()
wall = time.perf_counter() - t0
cpu = time.process_time() - cpu0
top = ""
if prof:
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s).sort_stats(cfg["sort"])
    st.print_stats(cfg["top"])
    for name in cfg["callees"]:
        st.print_callees(name)
    top = s.getvalue()
relay.close()
print(json.dumps({"claims": n, "wall": wall, "cpu": cpu, "counts": counts,
                  "times": times, "top": top}), flush=True)
"""


def _pg_execute(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pg_profile")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--delay", type=float, default=0.02)
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--sort", default="cumulative")
    p.add_argument("--shared", action="store_true", help="the shared claim and apply_many (A/B)")
    p.add_argument("--callees", action="append", default=[])
    p.add_argument("--engine", default="{}", help="engine settings as JSON")
    a = p.parse_args()
    url = os.environ.get("DOCRELAY_BENCH_PG_URL") or os.environ.get("DOCRELAY_TEST_PG_URL")
    if not url:
        print("error: set DOCRELAY_TEST_PG_URL", file=sys.stderr)
        return 2
    from docrelay import Document, Relay

    schema = f"bench_prof_{uuid.uuid4().hex[:8]}"
    server = ReferenceServer()
    try:
        server.configure(delay=a.delay, fail_ratio=0.0)
        options = {"schema": schema}
        engine = json.loads(a.engine)
        relay = Relay(
            store=url,
            store_options=options,
            providers={"econnect": provider_settings(server.url)},
            engine=engine or None,
        )
        cfg = {
            "store": url,
            "options": options,
            "provider": provider_settings(server.url),
            "cprofile": a.cprofile,
            "top": a.top,
            "callees": a.callees,
            "sort": a.sort,
            "shared": a.shared,
        }
        env = {**os.environ, "BENCH_PG_PROFILE": json.dumps(cfg)}
        kids = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(a.procs)
        ]
        for k in kids:
            assert k.stdout is not None
            if k.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
        docs = [
            Document(id=d.id, provider="econnect", kind="invoice", payload=d.payload)
            for d in make_docs(f"prof-{uuid.uuid4().hex[:4]}", a.docs)
        ]
        started = time.perf_counter()
        relay.submit_many(docs)
        submitted = time.perf_counter() - started
        for k in kids:
            assert k.stdin is not None
            k.stdin.write("go\n")
            k.stdin.flush()
        reports = []
        for k in kids:
            out, _ = k.communicate(timeout=600)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        elapsed = time.perf_counter() - started
        delivered = len(relay.statuses(state="delivered"))
        relay.close()
    finally:
        server.close()
        _pg_execute(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    print(f"load average {os.getloadavg()}")
    print(
        f"{a.docs} documents, {a.procs} processes, delay {a.delay}: {a.docs / elapsed:.1f} docs/s"
        f" (submit {submitted * 1000:.0f} ms), delivered {delivered}"
    )
    keys = sorted({k for r in reports for k in r["counts"]})
    print("per document (all processes):")
    for k in keys:
        n = sum(r["counts"].get(k, 0) for r in reports)
        t = sum(r["times"].get(k, 0.0) for r in reports)
        extra = f"  {t / a.docs * 1e6:8.0f} us" if t else ""
        print(f"  {k:24s} {n / a.docs:8.3f}{extra}")
    wall = sum(r["wall"] for r in reports)
    cpu = sum(r["cpu"] for r in reports)
    print(f"  {'worker wall':24s} {wall / a.docs * 1e6:8.0f} us  cpu {cpu / a.docs * 1e6:.0f} us")
    print("claims per process:", [r["claims"] for r in reports])
    if a.cprofile:
        print(reports[0]["top"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
