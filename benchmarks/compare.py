"""docrelay side by side with what users would pick instead, on the eConnect send.

    .venv/bin/python -m benchmarks compare [--docs 2000] [--rounds 3] [--delay 0|0.02]
                                           [--workers 1|16] [--pg | --sqlite-procs]
                                           [--procs 4] [--out DIR] [--workdir DIR]

Every side delivers ``--docs`` UBL invoices to one reference server (``benchmarks/_server.py``,
its own process) with the eConnect protocol (``benchmarks/_econnect.py``): the token fetched
once, then one ``POST .../salesInvoice/send`` with ``X-EConnect-DocumentId`` per document.
Each round runs every side once, in an order that rotates between rounds. A side's time runs
from its documents in memory to the last answer taken in: it includes opening (and creating)
its store or queue and enqueueing, and for the command-line sides starting the process. With
``--pg`` the stores are opened before the clock (a fleet is already running) and enqueueing
is timed. After each side the server's count of documents taken in must have grown by exactly
``--docs`` (and the side's own store must agree), or the run stops. With ``--pg`` and
``--sqlite-procs`` the processes are started and connected before the clock.

Sides (``--workers W``; ``--pg`` replaces them with the PostgreSQL ones):

- ``bare``: ``requests.Session.post`` in a loop (W threads, one session each): the 1.00.
- ``handwritten``: a SQLite status table (WAL, ``synchronous=NORMAL``), a commit before and
  after each POST, tenacity retries (3 attempts, jittered exponential wait); W threads.
- ``huey``: ``SqliteHuey`` (results kept, as by default), one task per document, a consumer
  with W worker threads in process.
- ``docrelay``: ``docrelay.Relay`` with its SQLite store, ``submit_many`` then
  ``run_until_idle(workers=W)``.
- ``docrelay-send``: ``docrelay send --workers W`` on one file per document (a new process).
- ``docrelay-run``: ``Relay.submit_many`` then ``docrelay run --until-idle --workers W``.
- ``--pg``: ``bare`` with P threads, ``procrastinate`` with P worker processes
  (concurrency 1), ``docrelay-pg`` with P processes of ``Relay`` on one PostgreSQL store.
- ``--sqlite-procs``: ``bare`` with P threads, ``docrelay-proc1`` (one process of ``Relay``)
  and ``docrelay-procs`` (P processes on one SQLite store), set up as the ``--pg`` sides.

Prints the ratio table (median of the rounds: docs/s and the ratio to ``bare`` of the same
round, with min and max) and writes ``compare-<time>.json``. Peak RSS of the command-line
sides is taken from the child's resource usage (the kernel's ``ru_maxrss``, through GNU time
so that it is the child's own, not this process's peak inherited at the spawn).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._econnect import (
    Doc,
    RetryableStatus,
    TokenCache,
    fetch_token,
    key_for,
    make_docs,
    provider_settings,
    send,
    send_checked,
    session,
)
from ._server import ReferenceServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SECRET_ENV = "BENCH_ECONNECT_CLIENT_SECRET"  # noqa: S105 - the name of a variable


class UsageError(Exception):
    """Bad input: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (argparse prints the usage too)
        raise UsageError(message)


@dataclass
class Run:
    """What one side needs for one round."""

    server: ReferenceServer
    work: Path
    docs: list[Doc]
    workers: int
    procs: int
    pg_url: str | None
    label: str
    extra: dict[str, Any] = field(default_factory=dict)
    huey_fsync: bool | None = False
    bare_threads: int = 0  # the bare loop's threads (default: workers)


def _docrelay_bin() -> str:
    exe = Path(sys.executable).with_name("docrelay")
    if not exe.exists():
        raise UsageError(f"the docrelay command is not installed next to {sys.executable}")
    return str(exe)


def _chunks(seq: Sequence[Any], n: int) -> list[list[Any]]:
    return [list(seq[i::n]) for i in range(n)]


def _in_threads(n: int, fn: Callable[[int], None]) -> None:
    """Run fn(0..n-1) in n threads (fn(0) in this one when n == 1); re-raise the first error."""
    if n == 1:
        fn(0)
        return
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


# -- sides ----------------------------------------------------------------------------------------


def side_bare(run: Run) -> float:
    """The reference: a bare requests loop, W (or P) threads with a session each."""
    n = run.bare_threads or run.workers
    base = run.server.url
    parts = _chunks(run.docs, n)
    sessions = [session() for _ in range(n)]
    started = time.perf_counter()
    token = fetch_token(sessions[0], base)

    def work(i: int) -> None:
        s = sessions[i]
        for d in parts[i]:
            r = send(s, base, token, key_for(d.id), d.payload)
            if r.status_code != 200:
                raise RuntimeError(f"bare: answer {r.status_code}")

    _in_threads(n, work)
    elapsed = time.perf_counter() - started
    for s in sessions:
        s.close()
    return elapsed


def side_handwritten(run: Run) -> float:
    """What an ERP developer writes by hand: a status table, commits around each POST,
    tenacity for the retries."""
    import tenacity

    base = run.server.url
    db = run.work / f"hand-{uuid.uuid4().hex[:8]}.db"
    n = run.workers
    sessions = [session() for _ in range(n)]
    retrying = tenacity.retry(
        retry=tenacity.retry_if_exception_type((RetryableStatus, OSError)),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=5, jitter=0.5),
        reraise=True,
    )(send_checked)
    started = time.perf_counter()
    con = sqlite3.connect(db, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE docs (id TEXT PRIMARY KEY, key TEXT NOT NULL, body BLOB NOT NULL, "
        "status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, answer INTEGER, "
        "updated REAL)"
    )
    con.execute("CREATE INDEX docs_status ON docs (status)")
    with con:
        con.executemany(
            "INSERT INTO docs (id, key, body, status) VALUES (?, ?, ?, 'queued')",
            [(d.id, key_for(d.id), d.payload) for d in run.docs],
        )
    con.close()
    token = fetch_token(sessions[0], base)

    def work(i: int) -> None:
        c = sqlite3.connect(db, timeout=30)
        c.execute("PRAGMA synchronous=NORMAL")
        rows = c.execute(
            "SELECT id, key, body FROM docs WHERE status = 'queued' AND rowid % ? = ? "
            "ORDER BY rowid",
            (n, i),
        ).fetchall()
        s = sessions[i]
        for doc_id, key, body in rows:
            with c:
                c.execute(
                    "UPDATE docs SET status = 'sending', attempts = attempts + 1, updated = ? "
                    "WHERE id = ?",
                    (time.time(), doc_id),
                )
            try:
                status = retrying(s, base, token, key, body)
                state = "delivered" if status in (200, 409) else "rejected"
            except (RetryableStatus, OSError):
                status, state = None, "retry"
            with c:
                c.execute(
                    "UPDATE docs SET status = ?, answer = ?, updated = ? WHERE id = ?",
                    (state, status, time.time(), doc_id),
                )
        c.close()

    _in_threads(n, work)
    elapsed = time.perf_counter() - started
    for s in sessions:
        s.close()
    con = sqlite3.connect(db)
    (delivered,) = con.execute("SELECT count(*) FROM docs WHERE status = 'delivered'").fetchone()
    con.close()
    if delivered != len(run.docs):
        raise RuntimeError(f"handwritten: {delivered} of {len(run.docs)} delivered")
    return elapsed


def side_huey(run: Run) -> float:
    """huey with its SQLite storage, one task per document, W consumer threads."""
    from huey import SqliteHuey  # type: ignore[import-untyped]

    base = run.server.url
    total = len(run.docs)
    done = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0}
    local = threading.local()
    tokens = TokenCache()
    started = time.perf_counter()
    huey = SqliteHuey(
        name="bench",
        filename=str(run.work / f"huey-{uuid.uuid4().hex[:8]}.db"),
        fsync=run.huey_fsync,
    )

    @huey.task(retries=2, retry_delay=1)  # type: ignore[untyped-decorator]
    def deliver(key: str, body: bytes) -> int:
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = session()
        status = send_checked(s, base, tokens.get(s, base), key, body)
        with lock:
            counts["ok"] += status in (200, 409)
            if counts["ok"] == total:
                done.set()
        return status

    for d in run.docs:
        deliver(key_for(d.id), d.payload)
    consumer = huey.create_consumer(workers=run.workers, worker_type="thread", periodic=False)
    # The consumer would take SIGTERM and SIGINT for a graceful stop of its own; the harness
    # must stay killable, and this process's signals are not the consumer's.
    consumer._set_signal_handlers = lambda: None
    consumer.start()
    try:
        if not done.wait(600):
            raise RuntimeError(f"huey: {counts['ok']} of {total} delivered in 10 minutes")
        elapsed = time.perf_counter() - started
    finally:
        consumer.stop(graceful=True)
        huey.storage.close()
    return elapsed


#: Engine settings of the library sides (``--engine KEY=VALUE``); empty: docrelay's defaults.
ENGINE: dict[str, Any] = {}


def _relay(store: str, base_url: str, **kwargs: Any) -> Any:
    from docrelay import Relay

    if ENGINE:
        kwargs.setdefault("engine", dict(ENGINE))
    return Relay(store=store, providers={"econnect": provider_settings(base_url)}, **kwargs)


def _documents(docs: Sequence[Doc]) -> list[Any]:
    from docrelay import Document

    return [Document(id=d.id, provider="econnect", kind="invoice", payload=d.payload) for d in docs]


def _delivered(relay: Any) -> int:
    return len(relay.statuses(state="delivered"))


def side_docrelay(run: Run, **relay_options: Any) -> float:
    """The library: ``Relay`` with SQLite, ``submit_many``, ``run_until_idle`` (with every
    installed plugin, as an application gets it: here the docrelay-otel middleware too)."""
    docs = _documents(run.docs)
    store = "sqlite:///" + str(run.work / f"lib-{uuid.uuid4().hex[:8]}.db")
    started = time.perf_counter()
    relay = _relay(store, run.server.url, **relay_options)
    relay.submit_many(docs)
    relay.run_until_idle(workers=run.workers)
    elapsed = time.perf_counter() - started
    try:
        if (n := _delivered(relay)) != len(docs):
            raise RuntimeError(f"docrelay: {n} of {len(docs)} delivered")
    finally:
        relay.close()
    return elapsed


def side_docrelay_no_otel(run: Run) -> float:
    """The library as an application without the docrelay-otel middleware installed has it
    (``Relay(disabled=["otel"])``): the core and the eConnect plugin alone."""
    return side_docrelay(run, disabled=["otel"])


def _cli_config(run: Run, db: Path) -> Path:
    cfg = run.work / f"docrelay-{uuid.uuid4().hex[:8]}.toml"
    p = provider_settings(run.server.url)
    cfg.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n\n[providers.econnect]\n'
        f'base_url = "{p["base_url"]}"\nclient_id = "{p["client_id"]}"\n'
        f'client_secret = "${{{SECRET_ENV}}}"\nparty_id = "{p["party_id"]}"\n'
    )
    return cfg


#: GNU time: runs the child from its own small process and writes the child's ru_maxrss.
_TIME = Path("/usr/bin/time")


def _run_child(argv: list[str], out: Path) -> tuple[int, int]:
    """Run a child to its end; (exit code, peak RSS in KiB from the kernel's rusage).

    A child spawned by this process starts with this process's peak RSS as its own (Linux
    keeps the larger of the two across exec), and this process holds the in-process sides'
    documents and threads: the child is started by GNU time instead (a process of about
    2 MiB), which reports the child's own peak. Without it, the figure is an upper bound."""
    env = {**os.environ, SECRET_ENV: provider_settings("")["client_secret"]}
    rss_file = out.with_suffix(".maxrss")
    timed = _TIME.exists()
    if timed:
        argv = [str(_TIME), "-f", "%M", "-o", str(rss_file), *argv]
    with out.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=run_dir())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    rss = int(usage.ru_maxrss)
    if timed:  # (killed before it wrote: the upper bound stays)
        with contextlib.suppress(OSError, ValueError, IndexError):
            rss = int(rss_file.read_text().split()[-1])
    return proc.returncode, rss


def run_dir() -> Path:
    return Path(tempfile.gettempdir())


def _check_cli(code: int, out: Path, what: str) -> None:
    if code != 0:
        tail = out.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{what} exited {code}: {' | '.join(tail)}")


def _check_store(db: Path, n: int, what: str) -> None:
    relay = _relay("sqlite:///" + str(db), "http://127.0.0.1:9")
    try:
        if (got := _delivered(relay)) != n:
            raise RuntimeError(f"{what}: {got} of {n} delivered")
    finally:
        relay.close()


def side_docrelay_send(run: Run) -> float:
    """``docrelay send --workers W FILE...``: one file per document, a fresh process."""
    folder = run.work / f"send-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    files = []
    for d in run.docs:
        f = folder / f"{d.id}.xml"
        f.write_bytes(d.payload)
        files.append(str(f))
    db = folder / "docrelay.db"
    cfg = _cli_config(run, db)
    out = folder / "output.txt"
    argv = [_docrelay_bin(), "--config", str(cfg), "send", "--provider", "econnect"]
    argv += ["--kind", "invoice", "--workers", str(run.workers), *files]
    started = time.perf_counter()
    code, rss = _run_child(argv, out)
    elapsed = time.perf_counter() - started
    _check_cli(code, out, "docrelay send")
    _check_store(db, len(run.docs), "docrelay send")
    run.extra.setdefault("peak_rss_kib", []).append(rss)
    return elapsed


def side_docrelay_run(run: Run) -> float:
    """``Relay.submit_many`` then ``docrelay run --until-idle --workers W`` (a fresh process)."""
    folder = run.work / f"run-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    db = folder / "docrelay.db"
    cfg = _cli_config(run, db)
    out = folder / "output.txt"
    docs = _documents(run.docs)
    argv = [_docrelay_bin(), "--config", str(cfg), "run", "--until-idle"]
    argv += ["--workers", str(run.workers)]
    started = time.perf_counter()
    relay = _relay("sqlite:///" + str(db), run.server.url)
    relay.submit_many(docs)
    relay.close()
    code, rss = _run_child(argv, out)
    elapsed = time.perf_counter() - started
    _check_cli(code, out, "docrelay run")
    _check_store(db, len(docs), "docrelay run")
    run.extra.setdefault("peak_rss_kib", []).append(rss)
    return elapsed


# -- PostgreSQL sides -----------------------------------------------------------------------------

_PROC_WORKER = r"""
import json, os, sys, time
from docrelay import Relay
cfg = json.loads(os.environ["BENCH_DOCRELAY_PROC"])
relay = Relay(store=cfg["store"], store_options=cfg["options"],
              providers={"econnect": cfg["provider"]})
relay.statuses(state="delivered")  # connected before the clock starts
print("ready", flush=True)
sys.stdin.readline()
n = relay.run_until_idle()
relay.close()
print(json.dumps({"claims": n}), flush=True)
"""


def _pg_execute(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def _docrelay_processes(
    run: Run, store: str, options: dict[str, Any], procs: int, what: str
) -> float:
    """*procs* processes of ``Relay`` (1 worker each) on one store, started and connected
    before the clock; the parent submits, then every process delivers until nothing is due."""
    docs = _documents(run.docs)
    relay = _relay(store, run.server.url, store_options=options)
    env = {
        **os.environ,
        "BENCH_DOCRELAY_PROC": json.dumps(
            {"store": store, "options": options, "provider": provider_settings(run.server.url)}
        ),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _PROC_WORKER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    try:
        for p in children:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {what} worker did not start")
        started = time.perf_counter()
        relay.submit_many(docs)
        for p in children:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in children:
            assert p.stdout is not None
            p.stdout.readline()
        elapsed = time.perf_counter() - started
        for p in children:
            if p.wait(60) != 0:
                raise RuntimeError(f"a {what} worker exited {p.returncode}")
        if (n := _delivered(relay)) != len(docs):
            raise RuntimeError(f"{what}: {n} of {len(docs)} delivered")
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()
        relay.close()
    return elapsed


def side_docrelay_pg(run: Run) -> float:
    """P processes of ``Relay`` (1 worker each) on one PostgreSQL store; the parent enqueues."""
    assert run.pg_url is not None
    schema = f"bench_cmp_{uuid.uuid4().hex[:8]}"
    try:
        return _docrelay_processes(run, run.pg_url, {"schema": schema}, run.procs, "docrelay-pg")
    finally:
        _pg_execute(run.pg_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _sqlite_store(run: Run, name: str) -> str:
    return "sqlite:///" + str(run.work / f"{name}-{uuid.uuid4().hex[:8]}.db")


def side_docrelay_proc1(run: Run) -> float:
    """One process of ``Relay`` (1 worker) on a SQLite store, as ``docrelay-procs`` but alone."""
    return _docrelay_processes(run, _sqlite_store(run, "proc1"), {}, 1, "docrelay-proc1")


def side_docrelay_procs(run: Run) -> float:
    """P processes of ``Relay`` (1 worker each) sharing one SQLite store."""
    return _docrelay_processes(run, _sqlite_store(run, "procs"), {}, run.procs, "docrelay-procs")


def procrastinate_schema(url: str) -> None:
    """Apply procrastinate's schema in the database once (its tables live in ``public``)."""
    rows = _pg_execute(url, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    if rows and rows[0][0]:
        return
    os.environ["BENCH_PG_URL"] = url
    from ._procrastinate_app import app

    with app.open():
        app.schema_manager.apply_schema()


def side_procrastinate(run: Run) -> float:
    """procrastinate with P worker processes (concurrency 1); the parent defers the jobs."""
    assert run.pg_url is not None
    url = run.pg_url
    os.environ["BENCH_PG_URL"] = url
    import psycopg

    from ._procrastinate_app import app, bench_send

    _pg_execute(url, "TRUNCATE procrastinate_jobs CASCADE")
    env = {**os.environ, "BENCH_PG_URL": url, "BENCH_BASE_URL": run.server.url}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    argv = [
        str(Path(sys.executable).with_name("procrastinate")),
        "--app",
        "benchmarks._procrastinate_app.app",
        "worker",
        "--concurrency",
        "1",
    ]
    logs = [run.work / f"procrastinate-{i}-{uuid.uuid4().hex[:6]}.log" for i in range(run.procs)]
    handles = [log.open("wb") for log in logs]
    procs = [
        subprocess.Popen(argv, env=env, cwd=ROOT, stdout=h, stderr=subprocess.STDOUT)
        for h in handles
    ]
    total = len(run.docs)
    try:
        deadline = time.monotonic() + 60
        while True:  # the workers are up when they have registered themselves
            (count,) = _pg_execute(url, "SELECT count(*) FROM procrastinate_workers")[0]
            if count >= run.procs:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("procrastinate workers did not start")
            time.sleep(0.05)
        jobs: list[dict[str, Any]] = [
            {"key": key_for(d.id), "body": d.payload.decode()} for d in run.docs
        ]
        # The end is polled on one connection: a new connection every 10 ms (a PostgreSQL
        # backend started each time) loaded the machine while procrastinate's side ran.
        with app.open(), psycopg.connect(url, autocommit=True) as watch:
            started = time.perf_counter()
            for i in range(0, total, 500):
                bench_send.batch_defer(*jobs[i : i + 500])
            deadline = time.monotonic() + 600
            while True:
                rows = watch.execute(
                    "SELECT status, count(*) FROM procrastinate_jobs GROUP BY status"
                ).fetchall()
                by = {str(s): int(c) for s, c in rows}
                if by.get("succeeded", 0) >= total:
                    break
                if by.get("failed", 0) or time.monotonic() > deadline:
                    raise RuntimeError(f"procrastinate: jobs {by}")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for h in handles:
            h.close()
        _pg_execute(url, "DELETE FROM procrastinate_workers")
    return elapsed


SIDES: dict[str, Callable[[Run], float]] = {
    "bare": side_bare,
    "handwritten": side_handwritten,
    "huey": side_huey,
    "docrelay": side_docrelay,
    "docrelay-no-otel": side_docrelay_no_otel,
    "docrelay-send": side_docrelay_send,
    "docrelay-run": side_docrelay_run,
    "procrastinate": side_procrastinate,
    "docrelay-pg": side_docrelay_pg,
    "docrelay-proc1": side_docrelay_proc1,
    "docrelay-procs": side_docrelay_procs,
}
SQLITE_SIDES = [
    "bare",
    "handwritten",
    "huey",
    "docrelay",
    "docrelay-no-otel",
    "docrelay-send",
    "docrelay-run",
]
PG_SIDES = ["bare", "procrastinate", "docrelay-pg"]
PROCS_SIDES = ["bare", "docrelay-proc1", "docrelay-procs"]
#: Side against side, per round (docs/s of the first over docs/s of the second).
PAIRS = [
    ("docrelay", "handwritten"),
    ("docrelay", "huey"),
    ("docrelay-no-otel", "handwritten"),
    ("docrelay-no-otel", "huey"),
    ("docrelay", "docrelay-no-otel"),
    ("docrelay-send", "docrelay"),
    ("docrelay-run", "docrelay"),
    ("docrelay-pg", "procrastinate"),
    ("docrelay-procs", "docrelay-proc1"),
]


# -- the run --------------------------------------------------------------------------------------


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = _Parser(prog="python -m benchmarks compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=2000, help="documents per side and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.0, help="server delay per send, seconds")
    p.add_argument("--workers", type=int, default=1, help="worker threads per side")
    p.add_argument("--pg", action="store_true", help="the PostgreSQL sides instead")
    p.add_argument(
        "--sqlite-procs",
        action="store_true",
        help="docrelay in --procs processes on one SQLite store against 1 process",
    )
    p.add_argument(
        "--procs", type=int, default=4, help="processes per side with --pg or --sqlite-procs"
    )
    p.add_argument(
        "--huey-fsync",
        choices=["off", "full", "default"],
        default="off",
        help="huey's SqliteStorage fsync: off (synchronous=OFF, survives a process crash as "
        "docrelay's synchronous=NORMAL does), full, or default (SQLite's, FULL)",
    )
    p.add_argument("--sides", default="", help="comma-separated subset of the sides")
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an engine setting of the library sides (repeatable; default: docrelay's own)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="where compare-*.json goes")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the sides' stores and files go (default: the system's temporary "
        "directory; /dev/shm takes the disk out of the figures)",
    )
    a = p.parse_args(list(argv))
    a.engine_settings = {}
    for item in a.engine:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--engine takes KEY=VALUE, not {item!r}")
        a.engine_settings[key.strip()] = int(value) if value.strip().isdigit() else value
    if not 1 <= a.docs <= 1_000_000:
        raise UsageError(f"--docs must be between 1 and 1000000, not {a.docs}")
    if not 1 <= a.rounds <= 100:
        raise UsageError(f"--rounds must be between 1 and 100, not {a.rounds}")
    if not 0 <= a.delay <= 10:
        raise UsageError(f"--delay must be between 0 and 10 seconds, not {a.delay}")
    if not 1 <= a.workers <= 64:
        raise UsageError(f"--workers must be between 1 and 64, not {a.workers}")
    if not 1 <= a.procs <= 32:
        raise UsageError(f"--procs must be between 1 and 32, not {a.procs}")
    if a.workdir is not None and not a.workdir.is_dir():
        raise UsageError(f"--workdir {a.workdir} is not a directory")
    if a.pg and a.sqlite_procs:
        raise UsageError("--pg and --sqlite-procs are two different runs: give one")
    allowed = PG_SIDES if a.pg else PROCS_SIDES if a.sqlite_procs else SQLITE_SIDES
    a.side_list = [s.strip() for s in a.sides.split(",") if s.strip()] or list(allowed)
    unknown = [s for s in a.side_list if s not in allowed]
    if unknown:
        raise UsageError(f"unknown side {unknown[0]!r}; sides here: {', '.join(allowed)}")
    if "bare" not in a.side_list:
        a.side_list.insert(0, "bare")
    a.huey_fsync_value = {"off": False, "full": True, "default": None}[a.huey_fsync]
    a.pg_url = None
    if a.pg:
        a.pg_url = os.environ.get("DOCRELAY_BENCH_PG_URL") or os.environ.get("DOCRELAY_TEST_PG_URL")
        if not a.pg_url:
            raise UsageError("--pg needs DOCRELAY_BENCH_PG_URL or DOCRELAY_TEST_PG_URL")
        try:
            _pg_execute(a.pg_url, "SELECT 1")
        except Exception as exc:
            raise UsageError(f"PostgreSQL unreachable: {type(exc).__name__}") from None
    return a


def _summary(rates: list[float], ratios: list[float]) -> dict[str, Any]:
    return {
        "docs_per_s": round(statistics.median(rates), 1),
        "docs_per_s_min": round(min(rates), 1),
        "docs_per_s_max": round(max(rates), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "per_round_docs_per_s": [round(r, 1) for r in rates],
        "per_round_ratio": [round(r, 3) for r in ratios],
    }


class _Retries(logging.Handler):
    """Counts docrelay's in-process retries (stamina logs each one) and keeps their causes."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        cause = str(record.__dict__.get("stamina.caused_by", "?"))
        self.causes.append(cause.split("(", 1)[0] + ": " + cause[-120:])

    def take(self) -> list[str]:
        out, self.causes = self.causes, []
        return out


def _server_taken(server: ReferenceServer) -> int:
    return int(server.stats().get("200", 0))


def main(argv: Sequence[str]) -> int:
    try:
        args = _parse(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ENGINE.clear()
    ENGINE.update(args.engine_settings)
    logging.getLogger("huey").setLevel(logging.WARNING)
    retries = _Retries()
    stamina_log = logging.getLogger("stamina")
    stamina_log.addHandler(retries)
    stamina_log.propagate = False
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    from ._common import machine

    sides: list[str] = args.side_list
    multi = args.pg or args.sqlite_procs
    label = (
        "pg" if args.pg else f"sqlite-p{args.procs}" if args.sqlite_procs else f"w{args.workers}"
    )
    n_threads = args.procs if multi else args.workers
    server = ReferenceServer()
    tmp = tempfile.TemporaryDirectory(prefix="docrelay-compare-", dir=args.workdir)
    work = Path(tmp.name)
    extras: dict[str, dict[str, Any]] = {s: {} for s in sides}
    times: dict[str, list[float]] = {s: [] for s in sides}
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        if args.pg:
            assert args.pg_url is not None
            if "procrastinate" in sides:
                procrastinate_schema(args.pg_url)
        server.configure(delay=0.0, fail_ratio=0.0)
        # Warm-up: imports, entry points, connections; not measured.
        for name in sides:
            warm = Run(
                server,
                work,
                make_docs(f"warm-{name}", 20),
                args.workers,
                args.procs,
                args.pg_url,
                label,
                huey_fsync=args.huey_fsync_value,
                bare_threads=n_threads,
            )
            SIDES[name](warm)
        retries.take()
        server.configure(delay=args.delay)
        for r in range(args.rounds):
            k = r % len(sides)
            order = sides[k:] + sides[:k]
            print(f"round {r + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr, flush=True)
            for name in order:
                docs = make_docs(f"r{r}-{name}", args.docs)
                run = Run(
                    server,
                    work,
                    docs,
                    args.workers,
                    args.procs,
                    args.pg_url,
                    label,
                    extras[name],
                    huey_fsync=args.huey_fsync_value,
                    bare_threads=n_threads,
                )
                before = _server_taken(server)
                dt = SIDES[name](run)
                taken = _server_taken(server) - before
                if taken != args.docs:
                    raise RuntimeError(f"{name}: the server took in {taken} of {args.docs}")
                times[name].append(dt)
                extras[name].setdefault("retries", []).extend(retries.take())
                print(f"  {name}: {args.docs / dt:.1f} docs/s", file=sys.stderr, flush=True)
        tokens = server.stats().get("token", 0)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.close()
        tmp.cleanup()

    table: dict[str, dict[str, Any]] = {}
    for name in sides:
        rates = [args.docs / t for t in times[name]]
        ratios = [times["bare"][i] / times[name][i] for i in range(args.rounds)]
        table[name] = _summary(rates, ratios)
        causes = extras[name].get("retries", [])
        table[name]["inprocess_retries"] = len(causes)
        table[name]["retry_causes"] = sorted(set(causes))[:5]
        if rss := extras[name].get("peak_rss_kib"):
            table[name]["peak_rss_mib"] = round(max(rss) / 1024, 1)
            table[name]["per_round_peak_rss_mib"] = [round(x / 1024, 1) for x in rss]
    pairs: dict[str, dict[str, Any]] = {}
    for a, b in PAIRS:
        if a in times and b in times:
            per = [times[b][i] / times[a][i] for i in range(args.rounds)]
            pairs[f"{a} / {b}"] = {
                "ratio": round(statistics.median(per), 3),
                "ratio_min": round(min(per), 3),
                "ratio_max": round(max(per), 3),
            }
    command = "python -m benchmarks compare " + " ".join(argv)
    out = {
        "command": command.strip(),
        "started_at": started_at,
        "machine": machine(),
        "load_average": os.getloadavg(),
        "docs": args.docs,
        "rounds": args.rounds,
        "delay": args.delay,
        "workers": args.workers,
        "procs": args.procs if multi else None,
        "threads_per_side": n_threads,
        "huey_fsync": args.huey_fsync,
        "workdir": str(args.workdir) if args.workdir else tempfile.gettempdir(),
        "token_requests": tokens,
        "sides": table,
        "pairs": pairs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compare-{time.strftime('%Y%m%dT%H%M%S')}-{label}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(render(out))
    print(f"\nwritten: {path}")
    return 0


def render(out: dict[str, Any]) -> str:
    par = f"{out['procs']} processes" if out["procs"] else f"{out['workers']} worker(s)"
    lines = [
        f"{out['docs']} documents per side, {out['rounds']} rounds, server delay "
        f"{out['delay'] * 1000:g} ms, {par}; load average "
        + " ".join(f"{x:.1f}" for x in out["load_average"]),
        "",
        "| side | docs/s (median) | min-max | ratio to bare | min-max | peak RSS | retries |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in out["sides"].items():
        rss = f"{s['peak_rss_mib']} MiB" if "peak_rss_mib" in s else ""
        lines.append(
            f"| {name} | {s['docs_per_s']:.0f} | {s['docs_per_s_min']:.0f}-"
            f"{s['docs_per_s_max']:.0f} | {s['ratio']:.2f} | {s['ratio_min']:.2f}-"
            f"{s['ratio_max']:.2f} | {rss} | {s.get('inprocess_retries') or ''} |"
        )
    if out.get("pairs"):
        lines += ["", "| pair (per round) | ratio (median) | min-max |", "|---|---|---|"]
        for name, pr in out["pairs"].items():
            lines.append(
                f"| {name} | {pr['ratio']:.2f} | {pr['ratio_min']:.2f}-{pr['ratio_max']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
