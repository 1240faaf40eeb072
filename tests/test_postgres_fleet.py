"""A fleet on PostgreSQL: 4 worker processes share one queue; one is killed with SIGKILL
mid-run. Every document must end final (or pending with a reason), none may be processed
twice (judged from the sandboxes' own records, by idempotency key) and none lost.

The sandboxes run in this process (threads on 127.0.0.1): ``acme`` honours the
Idempotency-Key, ``acme_nokey`` ignores it (docrelay then reconciles by lookup before a
resend); both inject 5xx errors and dropped answers (the request was processed, the answer
lost), ``acme`` also slow answers. ``DOCRELAY_FLEET_DOCS`` sets the number of documents
(default 5,000, the figure of issue 6).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmeSandbox
from docrelay import Document
from docrelay._store import iter_chunks, open_store

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
PG_SKIP_REASON = "PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set"
DOCS = int(os.environ.get("DOCRELAY_FLEET_DOCS", "5000"))
WORKERS = 4
FINAL = {"delivered", "duplicate", "no_action", "rejected"}

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: One worker process: a Relay on the shared store, delivering until nothing is due.
WORKER = r"""
import json, os, sys, time
from docrelay import Relay
from acme_testprovider import AcmePlugin

cfg = json.loads(os.environ["DOCRELAY_FLEET"])
creds = {"client_id": "acme-client", "client_secret": "acme-secret-value"}
relay = Relay(
    cfg["store"],
    store_options={"schema": cfg["schema"]},
    providers={name: {"base_url": url, **creds} for name, url in cfg["sandboxes"].items()},
    engine=cfg["engine"],
    plugins=[AcmePlugin("acme"), AcmePlugin("acme_nokey", dedupe=False)],
    autoload=False,
)
print("ready", flush=True)
deadline = time.monotonic() + cfg["deadline"]
while time.monotonic() < deadline:
    relay.run_until_idle()
    due = relay.store.next_due()
    if due is None:
        break
    time.sleep(min(0.2, max(0.0, due - time.time())) + 0.005)
relay.close()
print("done", flush=True)
"""

ENGINE = {
    "lease_seconds": 3.0,  # a killed worker's documents come back within seconds
    "batch_size": 8,
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.05,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.2,
    "deferral_max": 1.0,
    "poll_initial": 0.05,
    "poll_max": 0.2,
    "read_timeout": 5.0,
    "max_attempts": 20,
}


def _require_pg() -> str:
    if PG_URL:
        return PG_URL
    if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
        pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set", pytrace=False)
    pytest.skip(PG_SKIP_REASON)


@pytest.fixture
def schema() -> Iterator[str]:
    url = _require_pg()
    import psycopg

    name = f"fleet_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _docs(n: int) -> list[Document]:
    out = []
    for i in range(n):
        provider = "acme" if i % 4 else "acme_nokey"
        kind = "async" if provider == "acme" and i % 10 == 1 else "document"
        out.append(
            Document(
                id=f"fleet-{i:05d}", provider=provider, kind=kind,
                content_type="application/json", payload=json.dumps({"n": i}).encode(),
            )
        )  # fmt: skip
    return out


def _keys_by_effect(sandboxes: dict[str, AcmeSandbox]) -> dict[str, collections.Counter[str]]:
    return {
        name: collections.Counter(
            str(e.get("idempotency_key")) for e in list(s.effects)
            if e["kind"] == "document_received"
        )
        for name, s in sandboxes.items()
    }  # fmt: skip


def test_fleet_of_four_survives_a_killed_worker(schema: str, tmp_path: Path) -> None:
    started = time.monotonic()
    sandboxes = {
        "acme": AcmeSandbox(faults=["error@0.03", "drop@0.01", "slow@0.01:0.3"], seed=6),
        "acme_nokey": AcmeSandbox(faults=["error@0.03", "drop@0.01"], seed=7, dedupe=False),
    }
    for s in sandboxes.values():
        s.start()
    store = open_store(PG_URL, schema=schema, heartbeat=False)
    procs: list[subprocess.Popen[str]] = []
    try:
        documents = _docs(DOCS)
        for chunk in iter_chunks(documents, 1000):
            store.submit_many(chunk, time.time())
        cfg: dict[str, Any] = {
            "store": PG_URL,
            "schema": schema,
            "sandboxes": {name: s.url for name, s in sandboxes.items()},
            "engine": ENGINE,
            "deadline": 240.0,
        }
        env = {**os.environ, "DOCRELAY_FLEET": json.dumps(cfg)}
        env.pop("DOCRELAY_CRASH_AT", None)
        logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
        for log in logs:
            with log.open("w") as f:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", WORKER],
                        env=env,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
        # Kill one worker once a fifth of the documents is done: it is mid-batch then.
        victim = procs[0]
        kill_deadline = time.monotonic() + 120
        while time.monotonic() < kill_deadline:
            counts = store.counts()
            if sum(counts.get(s, 0) for s in FINAL) >= DOCS // 5:
                break
            assert victim.poll() is None, logs[0].read_text()[-2000:]
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.time()
        held = [
            r
            for r in store.select(states=["queued", "sending", "retry_wait", "unknown", "accepted"])
            if r.lease_owner
            and f":{victim.pid}:" in r.lease_owner
            and (r.lease_until or 0) > killed_at
        ]
        for p, log in zip(procs[1:], logs[1:], strict=True):
            p.wait(timeout=300)
            assert p.returncode == 0, log.read_text()[-3000:]
        assert victim.returncode == -signal.SIGKILL

        records = store.select()
        assert len(records) == DOCS  # zero lost from the store
        states = collections.Counter(r.state.value for r in records)
        pending = [r for r in records if r.state.value not in FINAL]
        assert all(r.reason for r in pending), [(r.id, r.state) for r in pending[:5]]
        # With these faults and budgets everything gets through in the end.
        assert states["delivered"] + states["duplicate"] == DOCS, states

        effects = _keys_by_effect(sandboxes)
        twice = {n: [k for k, c in counts_.items() if c > 1] for n, counts_ in effects.items()}
        assert twice == {"acme": [], "acme_nokey": []}  # zero processed twice
        for name in sandboxes:
            expected = {r.key for r in records if r.provider == name}
            assert None not in expected
            assert set(effects[name]) == expected  # every document reached its provider once
        elapsed = time.monotonic() - started
        injected = {n: dict(s.faults_injected) for n, s in sandboxes.items()}
        print(
            f"\nfleet: {DOCS} documents, {WORKERS} workers (1 killed holding {len(held)} "
            f"leases), {elapsed:.1f} s; states {dict(states)}; faults {injected}"
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        store.close()
        for s in sandboxes.values():
            s.stop()
