"""Limits kept across processes, locks waited for, dead owners recognised.

Every test runs real OS processes on one store against a sandbox on 127.0.0.1:

- two ``docrelay run`` processes share SieSmart's limit (0 x 429, the sandbox's request log
  shows the spacing) and one token between them, on SQLite and on PostgreSQL;
- a process holding SQLite's write lock (``BEGIN IMMEDIATE``) for a few seconds makes a
  ``docrelay run`` wait, with a line about it and no traceback;
- a worker SIGKILLed mid-send leaves leases that a new worker on the same machine takes over
  at once (the owner's process is gone), although the lease is long; the documents end
  delivered once, resent with the same key.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("docrelay_siesmart")

from acme_testprovider import AcmeSandbox
from docrelay import Document
from docrelay._store import open_store
from docrelay_procuros.sandbox import ProcurosSandbox
from docrelay_siesmart.sandbox import SieSmartSandbox

pytestmark = pytest.mark.slow

DOCRELAY = str(Path(sys.executable).with_name("docrelay"))
PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
SECRET = "two-process-siesmart-secret-41c9"
CLIENT = "two-process-client"
#: The sandbox's window (the documented 100/min, scaled down for test speed).
LIMIT, WINDOW = 20, 2.0
PROPOSALS = 36


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, TOML lines of the [store] table) on a fresh SQLite file or PG schema."""
    if request.param == "sqlite":
        yield "sqlite", f'url = "sqlite:///{tmp_path / "d.db"}"\n'
        return
    if not PG_URL:
        if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
            pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set")
        pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
    import psycopg

    schema = f"twoproc_{uuid.uuid4().hex[:10]}"
    yield "postgres", f'url = "{PG_URL}"\nschema = "{schema}"\n'
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _store_options(toml_store: str) -> tuple[str, dict[str, Any]]:
    url, options = "", {}
    for line in toml_store.splitlines():
        k, _, v = line.partition(" = ")
        if k == "url":
            url = json.loads(v)
        else:
            options[k] = json.loads(v)
    return url, options


def _proposal(n: int) -> Document:
    data = json.loads(
        resources.files("docrelay_siesmart")
        .joinpath("samples", "proposal-ct-scanner-gb.json")
        .read_text()
    )
    data["label"] = f"two-process proposal {n}"
    return Document(id=f"tp-{n:03d}", provider="siesmart", kind="proposal",
                    payload=json.dumps(data).encode(), content_type="application/json")  # fmt: skip


def _run(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DOCRELAY, "--config", str(config), "run", "--until-idle"], env=env, cwd=config.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_two_runs_share_the_siesmart_limit_and_one_token(
    store_url: tuple[str, str], tmp_path: Path
) -> None:
    """Two `docrelay run` on one store: no 429, at most LIMIT requests in any WINDOW at the
    sandbox, one token fetched between them; a later (cron) run fetches none; the token is
    not readable in the store."""
    backend, store_toml = store_url
    sandbox = SieSmartSandbox(client_id=CLIENT, client_secret=SECRET, rate_limit=LIMIT,
                              rate_window=WINDOW)  # fmt: skip
    with sandbox:
        config = tmp_path / "docrelay.toml"
        config.write_text(
            f"[store]\n{store_toml}"
            f'[providers.siesmart]\nbase_url = "{sandbox.url}"\nclient_id = "{CLIENT}"\n'
            'client_secret = "${TP_SECRET}"\n'
            f'rate_limit = "{LIMIT}/{WINDOW:g}"\n'
            # A fifth of the limit kept free for arrival jitter on a loaded, shared machine.
            "[engine]\nrate_margin = 0.2\nbatch_size = 4\nread_timeout = 10\n"
        )
        url, options = _store_options(store_toml)
        store = open_store(url, **options)
        try:
            store.submit_many([_proposal(i) for i in range(PROPOSALS)], time.time())
        finally:
            store.close()
        env = {**os.environ, "TP_SECRET": SECRET}
        env.pop("DOCRELAY_CRASH_AT", None)
        procs = [_run(config, env) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err[-3000:]
            assert "Traceback" not in err, err[-3000:]

        api = [r for r in list(sandbox.requests) if r["path"].startswith("/proposals")]
        statuses = Counter(r["status"] for r in api)
        fetches = sandbox.tokens.issued
        created = [e for e in sandbox.effects if e["kind"] == "proposal_created"]
        peak = _max_in_window([r["at"] for r in api], WINDOW)
        print(
            f"\n[{backend}] two processes, {PROPOSALS} proposals: {len(api)} API requests, "
            f"{statuses.get(429, 0)} x 429, {fetches} token fetch(es), peak {peak} requests "
            f"per {WINDOW:g} s (limit {LIMIT})"
        )
        assert statuses.get(429, 0) == 0, statuses
        assert len(created) == PROPOSALS
        assert len({e["label"] for e in created}) == PROPOSALS
        assert peak <= LIMIT
        assert fetches == 1

        # The next cron run of the CLI reuses the stored token.
        store = open_store(url, **options)
        try:
            store.submit(_proposal(PROPOSALS), time.time())
        finally:
            store.close()
        out, err = _run(config, env).communicate(timeout=60)
        assert "Traceback" not in err, err
        assert sandbox.tokens.issued == 1
        assert len([e for e in sandbox.effects if e["kind"] == "proposal_created"]) == (
            PROPOSALS + 1
        )

        # The token is a secret: not in the store as plain text, nor in any output.
        issued = sandbox.tokens.issued_tokens()
        for p_out, p_err in [*results, (out, err)]:
            assert not any(t in p_out or t in p_err for t in issued)
        if backend == "sqlite":
            blob = b"".join(f.read_bytes() for f in tmp_path.glob("d.db*"))
            assert blob, "the store file exists"
            assert not any(t.encode() in blob for t in issued)
            assert SECRET.encode() not in blob
        else:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"SET search_path TO {options['schema']}")
                values = [r[0] for r in conn.execute("SELECT value FROM docrelay_tokens")]
            assert values
            assert not any(t in v for v in values for t in issued)


LOCKER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


def _order(number: str) -> bytes:
    data = json.loads(
        resources.files("docrelay_procuros").joinpath("samples", "order.json").read_text()
    )
    data["header"]["orderIdentifier"] = number
    return json.dumps(data).encode()


def test_run_waits_for_another_process_holding_the_sqlite_write_lock(tmp_path: Path) -> None:
    """Another process holds BEGIN IMMEDIATE for a few seconds while `docrelay run` works
    with 4 threads: the run finishes everything, says it waited, prints no traceback."""
    token = "lock-test-token-0815"
    db = tmp_path / "d.db"
    with ProcurosSandbox(api_token=token, faults=["slow@1.0:0.05"]) as sandbox:
        config = tmp_path / "docrelay.toml"
        config.write_text(
            f'[store]\nurl = "sqlite:///{db}"\ntimeout = 2\n'
            f'[providers.procuros]\nbase_url = "{sandbox.url}"\napi_token = "${{LT_TOKEN}}"\n'
            "[engine]\nbatch_size = 2\nread_timeout = 5\n"
        )
        store = open_store(f"sqlite:///{db}")
        try:
            store.submit_many(
                [Document(id=f"lk-{i:02}", provider="procuros", kind="order",
                          payload=_order(f"LK-{i:02}"), content_type="application/json")
                 for i in range(30)],
                time.time(),
            )  # fmt: skip
        finally:
            store.close()
        env = {**os.environ, "LT_TOKEN": token}
        env.pop("DOCRELAY_CRASH_AT", None)
        run = subprocess.Popen(
            [DOCRELAY, "--config", str(config), "run", "--until-idle", "--workers", "4"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while len(sandbox.effects) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sandbox.effects, "the run started delivering"
        # Held for longer than the store's 2 s busy timeout.
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), "4"],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        _out, err = run.communicate(timeout=120)
        locker.communicate(timeout=30)
        assert run.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        lock_lines = [line for line in err.splitlines() if "lock" in line.lower()]
        assert 1 <= len(lock_lines) <= 2, err[-3000:]
        conn = sqlite3.connect(db)
        try:
            states = Counter(s for (s,) in conn.execute("SELECT state FROM documents"))
        finally:
            conn.close()
        assert states == {"delivered": 30}, (states, err[-2000:])
        assert len(sandbox.effects) == 30


SENDER = r"""
import json, os, sys
from docrelay import Document, Relay
from acme_testprovider import AcmePlugin

cfg = json.loads(os.environ["DEAD_OWNER_TEST"])
relay = Relay(
    cfg["url"], store_options=cfg["options"],
    providers={"acme": {"base_url": cfg["base_url"], "client_id": "acme-client",
                        "client_secret": "acme-secret-value"}},
    engine={"lease_seconds": 600, "batch_size": 4, "retry_wait_initial": 0.01,
            "retry_wait_max": 0.02, "deferral_initial": 0.05, "deferral_max": 0.2},
    plugins=[AcmePlugin()], autoload=False,
)
if cfg["submit"]:
    relay.submit_many([Document(id=f"do-{i}", provider="acme", payload=b'{"n": %d}' % i,
                                content_type="application/json") for i in range(4)])
statuses = relay.run_until_settled(timeout=cfg["settle"])
print(json.dumps([s.to_dict() for s in statuses]))
relay.close()
"""


def test_dead_owners_leases_are_taken_over_at_once(
    store_url: tuple[str, str], tmp_path: Path
) -> None:
    """A sender claims 4 documents with a 600 s lease and is SIGKILLed right after the
    intents are stored; a new sender (600 s lease too) takes them at once because the owner's
    process is gone: every document delivered once, the interrupted ones with the same key."""
    _backend, store_toml = store_url
    url, options = _store_options(store_toml)
    with AcmeSandbox() as sandbox:
        cfg = {"url": url, "options": options, "base_url": sandbox.url, "submit": True,
               "settle": 10}  # fmt: skip
        env = {**os.environ, "DEAD_OWNER_TEST": json.dumps(cfg),
               "DOCRELAY_CRASH_AT": "after_intent",
               "DOCRELAY_DISABLE_PLUGIN_AUTOLOAD": "1"}  # fmt: skip
        child = subprocess.run([sys.executable, "-c", SENDER], env=env, capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
        store = open_store(url, **options)
        try:
            held = store.select()
            # The batch's intents are stored together (group commit): all four in flight.
            interrupted = [r for r in held if r.state.value == "sending"]
            assert interrupted
            assert all(r.key for r in interrupted)
            assert all(r.lease_owner and (r.lease_until or 0) > time.time() + 500 for r in held)
            keys = {r.id: r.key for r in interrupted}
        finally:
            store.close()
        assert not [e for e in sandbox.effects if e["kind"] == "document_received"]

        cfg["submit"], cfg["settle"] = False, 5
        env["DEAD_OWNER_TEST"] = json.dumps(cfg)
        del env["DOCRELAY_CRASH_AT"]
        child = subprocess.run([sys.executable, "-c", SENDER], env=env, capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
        assert child.returncode == 0, child.stderr[-3000:]
        statuses = {s["id"]: s for s in json.loads(child.stdout)}
        assert {s["state"] for s in statuses.values()} == {"delivered"}, statuses
        assert all(statuses[i]["key"] == k for i, k in keys.items())
        received = Counter(
            e["idempotency_key"] for e in sandbox.effects if e["kind"] == "document_received"
        )
        assert sorted(received.values()) == [1, 1, 1, 1]
        assert set(received) == {s["key"] for s in statuses.values()}


def test_etag_reads_count_against_the_limit(tmp_path: Path) -> None:
    """Not only sends: the ETag read (GET) before each update takes a rate slot too, so a
    run of updates stays under SieSmart's window (0 x 429)."""
    import requests
    from docrelay import Relay
    from docrelay.sandbox import SlidingWindow

    limit, window, n = 6, 1.0, 8
    with SieSmartSandbox(client_id=CLIENT, client_secret=SECRET, rate_limit=limit,
                         rate_window=window) as sandbox:  # fmt: skip
        token = requests.post(f"{sandbox.url}/oauth/token", timeout=5, json={
            "audience": "https://api.siesmart.com/b2b", "grant_type": "client_credentials",
            "client_id": CLIENT, "client_secret": SECRET}).json()["access_token"]  # fmt: skip
        pids = []
        for i in range(n):
            sandbox.window = SlidingWindow(10**6, window)  # the setup is not rate limited
            body = json.loads(_proposal(i).payload)
            r = requests.post(f"{sandbox.url}/proposals", json=body, timeout=5,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert r.status_code == 200, r.text
            pids.append(r.json()["id"])
        sandbox.window = SlidingWindow(limit, window)
        before = len(sandbox.requests)
        with Relay(
            f"sqlite:///{tmp_path / 'u.db'}",
            providers={"siesmart": {"base_url": sandbox.url, "client_id": CLIENT,
                                    "client_secret": SECRET, "rate_limit": f"{limit}/{window:g}"}},
            engine={"rate_margin": 0.25, "max_attempts": 1, "inprocess_attempts": 1},
        ) as relay:  # fmt: skip
            relay.submit_many([
                Document(id=f"up-{i}", provider="siesmart", kind="proposal_update",
                         metadata={"proposal_id": pid}, content_type="application/json",
                         payload=json.dumps({"specialConditionText": f"update {i}"}).encode())
                for i, pid in enumerate(pids)
            ])  # fmt: skip
            relay.run_until_idle()
            states = Counter(s.state.value for s in relay.statuses())
        api = [r for r in list(sandbox.requests)[before:] if r["path"].startswith("/proposals")]
        methods = Counter(r["method"] for r in api)
        assert methods["GET"] >= n, methods  # every update read its ETag first
        assert Counter(r["status"] for r in api).get(429, 0) == 0
        assert states == {"delivered": n}


@pytest.mark.parametrize(
    ("store_extra", "provider_extra", "words"),
    [
        ("", 'rate_limit_scope = "ip"\n', "rate_limit_scope must be one of 'host', 'credential'"),
        ('lock_timeout = "soon"\n', "", "lock_timeout must be a number (finite, > 0)"),
        ("dead_owner_check = -1\n", "", "dead_owner_check must be a number (finite, >= 0)"),
    ],
)
def test_bad_limit_settings_are_one_line_and_exit_2(
    tmp_path: Path, store_extra: str, provider_extra: str, words: str
) -> None:
    db = tmp_path / "bad.db"
    config = tmp_path / "docrelay.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n{store_extra}'
        '[providers.siesmart]\nclient_id = "c"\nclient_secret = "${TP_SECRET}"\n'
        f"{provider_extra}"
    )
    env = {**os.environ, "TP_SECRET": SECRET}
    proc = subprocess.run([DOCRELAY, "--config", str(config), "run", "--until-idle"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if store_extra:
        assert not db.exists(), "nothing half-written"
