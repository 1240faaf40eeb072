"""Red team: the store package and the transactional outbox, attacked as a hostile world would.

Each test is a break found over real loopback HTTP against the Acme sandbox, with real ERP
connections (sqlite3, psycopg 3) and real worker processes; nothing is mocked. The ERP's
connection comes the way ERPs hand theirs over: with a row factory or text factory of their
own, a cursor factory, loaders, pipeline mode. PostgreSQL sessions are ended by the server
the ways servers end them (``pg_terminate_backend``, ``idle_in_transaction_session_timeout``
after a worker froze inside a transaction).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import Document, DocumentError, Relay

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
CREDS = {"client_id": "acme-client", "client_secret": "acme-secret-value"}


def _require_pg() -> str:
    if PG_URL:
        return PG_URL
    if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
        pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set", pytrace=False)
    pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")


def _doc(doc_id: str, version: int = 1) -> Document:
    body = json.dumps({"doc": doc_id, "v": version}).encode()
    return Document(id=doc_id, provider="acme", kind="document", payload=body,
                    content_type="application/json", metadata={"kunde": "Müller"})  # fmt: skip


def _received(sandbox: AcmeSandbox) -> collections.Counter[str]:
    return collections.Counter(
        json.loads(e["body"])["doc"] for e in list(sandbox.effects)
        if e["kind"] == "document_received"
    )  # fmt: skip


def _document_requests(sandbox: AcmeSandbox, doc_id: str | None = None) -> list[dict[str, Any]]:
    out = [r for r in list(sandbox.requests) if r["path"].startswith("/documents")]
    if doc_id is None:
        return out
    return [r for r in out if doc_id in (r.get("body") or "") or r["path"].endswith(doc_id)]


@pytest.fixture
def sandbox() -> Iterator[AcmeSandbox]:
    with AcmeSandbox() as s:
        yield s  # type: ignore[misc]


class PG:
    """A fresh docrelay schema and an ERP schema on the test server."""

    def __init__(self) -> None:
        import psycopg

        self.url = _require_pg()
        tag = uuid.uuid4().hex[:10]
        self.schema = f"rta_{tag}"
        self.erp_schema = f"rta_erp_{tag}"
        self.app = f"rta-{tag}"
        self.cleanup: list[Callable[[], None]] = []
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.erp_schema}")
            conn.execute(f"CREATE TABLE {self.erp_schema}.invoices (number TEXT PRIMARY KEY)")

    def relay(self, sandbox: AcmeSandbox, app: str | None = None, **engine: Any) -> Relay:
        options: dict[str, Any] = {"schema": self.schema, "heartbeat": False}
        if app:
            options["application_name"] = app
        relay = Relay(self.url, providers={"acme": {"base_url": sandbox.url, **CREDS}},
                      plugins=[AcmePlugin("acme")], autoload=False, store_options=options,
                      engine=engine or None)  # fmt: skip
        self.cleanup.append(relay.close)
        return relay

    def connect(self, **kwargs: Any) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, **kwargs)
        self.cleanup.append(conn.close)
        return conn

    def booked(self) -> set[str]:
        import psycopg

        with psycopg.connect(self.url) as conn:
            return {r[0] for r in conn.execute(f"SELECT number FROM {self.erp_schema}.invoices")}

    def close(self) -> None:
        import psycopg

        for fn in reversed(self.cleanup):
            fn()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {self.erp_schema} CASCADE")


@pytest.fixture
def pg() -> Iterator[PG]:
    p = PG()
    try:
        yield p
    finally:
        p.close()


# -- the outbox on the ERP's SQLite connection ---------------------------------------------------


def _dict_rows(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: row[i] for i, col in enumerate(cursor.description)}


SQLITE_FACTORIES: dict[str, Callable[[sqlite3.Connection], None]] = {
    "dict-row-factory": lambda c: setattr(c, "row_factory", _dict_rows),
    "text-factory-bytes": lambda c: setattr(c, "text_factory", bytes),
}


@pytest.mark.parametrize("factory", sorted(SQLITE_FACTORIES))
def test_rt_outbox_sqlite_erp_connection_with_its_own_factories(
    tmp_path: Path, sandbox: AcmeSandbox, factory: str
) -> None:
    """The ERP's sqlite3 connection with a dict row factory (the recipe of the sqlite3 docs)
    raised a bare ``KeyError: 1`` from docrelay's checks; with ``text_factory = bytes`` the
    file was refused as "an in-memory database". Both must be taken as they are, and the
    connection's factories be the ERP's again after the call."""
    path = tmp_path / "erp.db"
    relay = Relay(f"sqlite:///{path}", providers={"acme": {"base_url": sandbox.url, **CREDS}},
                  plugins=[AcmePlugin("acme")], autoload=False)  # fmt: skip
    try:
        setup = sqlite3.connect(path)
        setup.execute("CREATE TABLE invoices (number TEXT PRIMARY KEY)")
        setup.commit()
        setup.close()
        erp = sqlite3.connect(path)
        SQLITE_FACTORIES[factory](erp)
        before = (erp.row_factory, erp.text_factory)
        erp.execute("INSERT INTO invoices VALUES ('INV-1')")
        status = relay.submit(_doc("inv-1"), connection=erp)
        assert (status.id, status.state.value) == ("inv-1", "queued")
        assert (erp.row_factory, erp.text_factory) == before
        erp.commit()
        erp.close()
        relay.run_until_idle()
        assert relay.status("inv-1").state.value == "delivered"
        assert relay.status("inv-1").metadata == {"kunde": "Müller"}
        assert _received(sandbox) == {"inv-1": 1}
    finally:
        relay.close()


# -- the outbox on the ERP's psycopg connection --------------------------------------------------


def _upper_text_loader() -> Any:
    from psycopg.adapt import Loader

    class UpperText(Loader):  # an ERP that normalises every text it reads
        def load(self, data: Any) -> str:
            return bytes(data).decode().upper()

    return UpperText


PG_CONNECTIONS: dict[str, Callable[[PG], Any]] = {
    "raw-cursor-factory": lambda pg: pg.connect(cursor_factory=__import__("psycopg").RawCursor),
    "own-text-loader": lambda pg: _with_loader(pg.connect()),
}


def _with_loader(conn: Any) -> Any:
    conn.adapters.register_loader("text", _upper_text_loader())
    return conn


@pytest.mark.postgres
@pytest.mark.parametrize("kind", sorted(PG_CONNECTIONS))
def test_rt_outbox_pg_erp_connection_with_its_own_cursor_factory_or_loaders(
    pg: PG, sandbox: AcmeSandbox, kind: str
) -> None:
    """A psycopg connection made with ``cursor_factory=RawCursor`` ($1 placeholders): the
    outbox's identity query failed with a bare ``psycopg.errors.SyntaxError`` *and aborted
    the ERP's transaction*, though docrelay promises its read "never an error: the caller's
    transaction stays as it was" (the ERP lost its booked invoice). A connection with a text
    loader of the ERP's own: a bare ``ValueError: 'QUEUED' is not a valid DocState``."""
    relay = pg.relay(sandbox)
    erp = PG_CONNECTIONS[kind](pg)
    erp.execute(f"INSERT INTO {pg.erp_schema}.invoices VALUES ('INV-1')")
    status = relay.submit(_doc("inv-1"), connection=erp)
    assert (status.id, status.state.value) == ("inv-1", "queued")
    erp.commit()
    assert pg.booked() == {"INV-1"}
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "delivered"
    assert _received(sandbox) == {"inv-1": 1}


@pytest.mark.postgres
def test_rt_outbox_pg_two_submits_in_one_pipeline(pg: PG, sandbox: AcmeSandbox) -> None:
    """psycopg's pipeline mode inside the ERP's transaction: the first submit left its
    RELEASE in flight, and the second was refused "the connection is busy (ACTIVE)"; a new
    document's INSERT was judged by ``rowcount`` (-1 in pipeline mode), as if another
    transaction had stored it."""
    relay = pg.relay(sandbox)
    erp = pg.connect()
    erp.execute(f"INSERT INTO {pg.erp_schema}.invoices VALUES ('INV-1')")
    with erp.pipeline():
        first = relay.submit(_doc("inv-1", 1), connection=erp)
        second = relay.submit(_doc("inv-1", 2), connection=erp)  # a correction, same tx
        relay.submit(_doc("inv-2"), connection=erp)
        erp.execute(f"INSERT INTO {pg.erp_schema}.invoices VALUES ('INV-2')")
    assert first.revision != second.revision
    erp.commit()
    assert pg.booked() == {"INV-1", "INV-2"}
    relay.run_until_idle()
    assert {s.id: (s.state.value, s.revision) for s in relay.statuses()} == {
        "inv-1": ("delivered", second.revision),
        "inv-2": ("delivered", relay.status("inv-2").revision),
    }
    assert _received(sandbox) == {"inv-1": 1, "inv-2": 1}


# -- an ERP transaction holding a document's row while a worker delivers ------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("what", ["unchanged", "revision"])
def test_rt_pg_erp_transaction_on_one_document_keeps_a_live_workers_other_leases(
    pg: PG, what: str
) -> None:
    """Worker W claims inv-a and inv-b in one batch (1 s leases) and sends inv-a, which the
    provider answers slowly. Meanwhile an ERP transaction submits inv-b again (the same
    revision: an idempotent re-submit; or a correction) and stays open 3 s. The outbox
    locked inv-b's row (``FOR UPDATE``) even for an unchanged document, and the lease
    keeper's one UPDATE for W's leases waited on that lock while holding inv-a's: inv-a's
    lease ran out under the live worker, a rival worker took it over and looked it up at the
    provider while W's request was still in flight (measured: taken over at 3.1 s, a
    ``reconcile`` attempt by the rival, W's answer kept by the "lease ran out" rescue)."""
    sandbox = AcmeSandbox(faults=["slow*1:4"])
    sandbox.start()
    try:
        worker = pg.relay(sandbox, lease_seconds=1.0, batch_size=2)
        rival = pg.relay(sandbox, lease_seconds=1.0, batch_size=2)
        worker.submit(_doc("inv-a"))
        worker.submit(_doc("inv-b"))
        erp = pg.connect()
        run = threading.Thread(target=worker.run_until_idle)
        run.start()
        for _ in range(500):
            if worker.status("inv-a").state.value == "sending":
                break
            time.sleep(0.01)
        assert worker.status("inv-a").state.value == "sending"
        again = _doc("inv-b", 1 if what == "unchanged" else 2)
        if what == "revision" and worker.status("inv-b").state.value == "sending":
            # Group commit stored inv-b's intent with inv-a's: a correction of a document
            # being sent is refused (the lifecycle's rule), and the refusal locks nothing.
            with pytest.raises(DocumentError, match="sending"):
                worker.submit(again, connection=erp)
        else:
            worker.submit(again, connection=erp)
        commit = threading.Timer(3.0, erp.commit)
        commit.start()
        while commit.is_alive():
            rival.run_until_idle()
            time.sleep(0.05)
        run.join(timeout=60)
        assert not run.is_alive()
        rival.run_until_idle()
        worker.run_until_idle()
        actions = [a.action for a in worker.history("inv-a")]
        assert actions == ["send"], actions  # nobody but W touched inv-a
        assert worker.status("inv-a").state.value == "delivered"
        assert worker.status("inv-b").state.value == "delivered"
        assert _received(sandbox) == {"inv-a": 1, "inv-b": 1}
    finally:
        if "run" in locals():
            run.join(timeout=60)  # a failed assertion must not leave W running on a closed store
        sandbox.stop()


# -- PostgreSQL sessions ended by the server -----------------------------------------------------


@pytest.mark.postgres
def test_rt_pg_store_after_the_server_ended_its_idle_sessions(
    pg: PG, sandbox: AcmeSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends the sessions of a worker's idle pooled connections (a restart, a
    failover, ``pg_terminate_backend``, a firewall's idle cut). The next store call on each
    of them failed: ``submit`` raised ``StoreError: terminating connection due to
    administrator command`` (the ERP's document refused for nothing), and a ``claim`` or
    ``next_due`` ended ``run_until_idle`` / ``run_forever`` (``docrelay run`` exits)."""
    import psycopg

    relay = pg.relay(sandbox, app=pg.app)
    for i in range(3):
        relay.submit(_doc(f"inv-{i}"))
    relay.run_until_idle(workers=3)  # several pooled connections
    with psycopg.connect(pg.url, autocommit=True) as admin:
        (ended,) = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (pg.app,),
        ).fetchone()
        assert ended >= 1
        for _ in range(200):  # the server has ended them
            (left,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (pg.app,)
            ).fetchone()
            if left == 0:
                break
            time.sleep(0.02)
    caplog.set_level(logging.WARNING, logger="docrelay")
    relay.submit(_doc("inv-late"))
    relay.run_until_idle(workers=3)
    assert relay.status("inv-late").state.value == "delivered"
    assert _received(sandbox) == {"inv-0": 1, "inv-1": 1, "inv-2": 1, "inv-late": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


FROZEN_WORKER = r"""
import json, os, signal, sys, time
from contextlib import contextmanager
from docrelay import Relay
from acme_testprovider import AcmePlugin

cfg = json.loads(os.environ["RTA_WORKER"])
relay = Relay(cfg["url"], autoload=False, plugins=[AcmePlugin("acme")],
    store_options={"schema": cfg["schema"], "application_name": cfg["app"],
                   "idle_transaction_timeout": 0.5},
    providers={"acme": {"base_url": cfg["sandbox"], "client_id": "acme-client",
                        "client_secret": "acme-secret-value"}})
store = relay.store
plain_tx = store._tx


@contextmanager
def freezing_tx(write=True):
    # Test instrumentation (as DOCRELAY_CRASH_AT): the first write transaction after the
    # flag file appears stops this process (SIGSTOP) right before its COMMIT.
    with plain_tx(write) as cur:
        yield cur
        if write and os.path.exists(cfg["freeze"]):
            os.remove(cfg["freeze"])
            os.kill(os.getpid(), signal.SIGSTOP)


store._tx = freezing_tx
print("ready", flush=True)
while not os.path.exists(cfg["stop"]) or relay.next_due() is not None:
    relay.run_until_idle()
    time.sleep(0.02)
relay.close()
print("done", flush=True)
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


@pytest.mark.postgres
@pytest.mark.slow
def test_rt_pg_worker_frozen_inside_its_claim_transaction_recovers(
    pg: PG, sandbox: AcmeSandbox, tmp_path: Path
) -> None:
    """A worker frozen (SIGSTOP: a paused VM, a debugger) inside its claim transaction past
    ``idle_transaction_timeout``: the server rolls the transaction back and ends the session,
    as designed. When the worker is continued, its COMMIT raised
    ``IdleInTransactionSessionTimeout`` as a ``StoreError`` out of ``claim``, out of
    ``run_until_idle``: the worker process died with a traceback. It must reconnect and go
    on delivering (the transaction was rolled back: running it again is safe)."""
    import psycopg

    submitter = pg.relay(sandbox)  # creates the schema
    freeze, stop = tmp_path / "freeze", tmp_path / "stop"
    cfg = {"url": pg.url, "schema": pg.schema, "app": pg.app, "sandbox": sandbox.url,
           "freeze": str(freeze), "stop": str(stop)}  # fmt: skip
    env = {**os.environ, "RTA_WORKER": json.dumps(cfg)}
    env.pop("DOCRELAY_CRASH_AT", None)
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_WORKER], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        freeze.touch()
        for _ in range(1000):
            if _stopped(proc.pid):
                break
            time.sleep(0.01)
        assert _stopped(proc.pid), "the worker never froze inside a transaction"
        submitter.submit(_doc("inv-1"))
        with psycopg.connect(pg.url, autocommit=True) as admin:
            for _ in range(1000):  # the server ends the frozen transaction's session
                (inside,) = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND state LIKE 'idle in transaction%%'",
                    (pg.app,),
                ).fetchone()
                if inside == 0:
                    break
                time.sleep(0.02)
            assert inside == 0
        os.kill(proc.pid, signal.SIGCONT)
        stop.touch()
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert submitter.status("inv-1").state.value == "delivered"
        assert _received(sandbox) == {"inv-1": 1}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.communicate(timeout=30)


@pytest.mark.postgres
def test_rt_outbox_pg_after_a_server_restart(pg: PG, sandbox: AcmeSandbox) -> None:
    """The outbox caches, per store, the identity of the store's server (database, oid and
    ``pg_postmaster_start_time()``) and refuses a connection whose identity differs. After
    a restart or a failover of the server the start time differs for *every* connection, so
    every ``submit(connection=...)`` of a long-running ERP process was refused as "another
    server or another database" until the process restarted. (A restart needs a superuser;
    the test leaves the cache as a restart leaves it: holding the old start time.)"""
    from docrelay import _outbox

    relay = pg.relay(sandbox)
    erp = pg.connect()
    relay.submit(_doc("inv-1"), connection=erp)  # the identity is cached
    erp.commit()
    schema, database, oid, _started = _outbox._PG_HOMES[relay.store]
    _outbox._PG_HOMES[relay.store] = (schema, database, oid, "2026-01-01 00:00:00+00")
    erp.execute(f"INSERT INTO {pg.erp_schema}.invoices VALUES ('INV-2')")
    relay.submit(_doc("inv-2"), connection=erp)
    erp.commit()
    assert pg.booked() == {"INV-2"}
    relay.run_until_idle()
    assert _received(sandbox) == {"inv-1": 1, "inv-2": 1}
