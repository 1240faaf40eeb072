"""The transactional outbox: ``Relay.submit(doc, connection=erp)`` writes in the ERP's own
transaction, on its own connection (psycopg 3 on PostgreSQL, sqlite3 on one shared file).

Judged from the Acme sandbox's request log and effects over loopback, from the ERP's table
and from docrelay's store:

- a rollback leaves nothing in either table and sends nothing; a commit delivers once;
- a process SIGKILLed between its statements and its commit leaves nothing and sends
  nothing; one killed after its commit has its document delivered once by a worker;
- refusals (wrong connection type, another file or database, no docrelay schema, autocommit,
  a known id with another revision) write nothing and leave the ERP's transaction usable;
- on PostgreSQL, many concurrent ERP transactions (some rolling back) and two worker
  processes: every committed document delivered once, no rolled-back document sent.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import ConfigError, Document, DocumentError, Relay

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
CREDS = {"client_id": "acme-client", "client_secret": "acme-secret-value"}


def _require_pg() -> str:
    if PG_URL:
        return PG_URL
    if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
        pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set", pytrace=False)
    pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")


def _doc(doc_id: str, payload: dict[str, Any] | None = None) -> Document:
    body = json.dumps(payload if payload is not None else {"doc": doc_id}).encode()
    return Document(id=doc_id, provider="acme", kind="document", payload=body,
                    content_type="application/json")  # fmt: skip


class Backend:
    """One store plus the ERP's side of it: the store URL and options, how the ERP connects,
    and the ERP's own table (``invoices``), in the same database as docrelay's tables."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.cleanup: list[Callable[[], None]] = []
        if name == "sqlite":
            self.path = tmp_path / "erp.db"
            self.url = f"sqlite:///{self.path}"
            self.options: dict[str, Any] = {}
            self.invoices = "invoices"
            self.ph = "?"
        else:
            self.url = _require_pg()
            tag = uuid.uuid4().hex[:10]
            self.schema = f"outbox_{tag}"
            self.options = {"schema": self.schema, "heartbeat": False}
            self.invoices = f"erp_{tag}.invoices"
            self.ph = "%s"

    def relay(self, sandbox: AcmeSandbox, **engine: Any) -> Relay:
        relay = Relay(self.url, providers={"acme": {"base_url": sandbox.url, **CREDS}},
                      plugins=[AcmePlugin("acme")], autoload=False,
                      store_options=self.options, engine=engine or None)  # fmt: skip
        self.cleanup.append(relay.close)
        return relay

    def connect(self, **kwargs: Any) -> Any:
        """An ERP connection (not in autocommit mode: the driver opens the transaction)."""
        if self.name == "sqlite":
            conn: Any = sqlite3.connect(self.path, **kwargs)
        else:
            import psycopg

            conn = psycopg.connect(self.url, **kwargs)
        self.cleanup.append(conn.close)
        return conn

    def create_erp_table(self) -> None:
        """The ERP's table, next to docrelay's (after them: a SQLite store refuses to move
        into a file with other tables)."""
        conn = self.connect()
        if self.name != "sqlite":
            conn.execute(f"CREATE SCHEMA {self.invoices.split('.')[0]}")
        conn.execute(f"CREATE TABLE {self.invoices} (number TEXT PRIMARY KEY, total INTEGER)")
        conn.commit()
        conn.close()

    def book(self, conn: Any, number: str) -> None:
        """The ERP's own statement of a transaction."""
        conn.execute(f"INSERT INTO {self.invoices} VALUES ({self.ph}, 100)", (number,))

    def booked(self) -> set[str]:
        conn = self.connect()
        try:
            return {r[0] for r in conn.execute(f"SELECT number FROM {self.invoices}")}
        finally:
            conn.close()

    def close(self) -> None:
        for fn in reversed(self.cleanup):
            fn()
        if self.name != "sqlite":
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
                conn.execute(f"DROP SCHEMA IF EXISTS {self.invoices.split('.')[0]} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def sandbox() -> Iterator[AcmeSandbox]:
    with AcmeSandbox() as s:
        yield s  # type: ignore[misc]


def _received(sandbox: AcmeSandbox) -> collections.Counter[str]:
    """Document id -> how many times the provider took it in."""
    return collections.Counter(
        json.loads(e["body"])["doc"] for e in list(sandbox.effects)
        if e["kind"] == "document_received"
    )  # fmt: skip


def _document_requests(sandbox: AcmeSandbox) -> list[dict[str, Any]]:
    return [r for r in list(sandbox.requests) if r["path"].startswith("/documents")]


# -- commit and rollback -------------------------------------------------------------------------


def test_rollback_leaves_nothing_and_sends_nothing(backend: Backend, sandbox: AcmeSandbox) -> None:
    relay = backend.relay(sandbox)
    backend.create_erp_table()
    erp = backend.connect()
    backend.book(erp, "INV-1")
    status = relay.submit(_doc("inv-1"), connection=erp)
    assert status.state.value == "queued"  # as the ERP's transaction sees it
    assert relay.submit_many([_doc("inv-2"), _doc("inv-3")], connection=erp) == 2
    erp.rollback()
    assert relay.statuses() == []
    assert backend.booked() == set()
    relay.run_until_idle()
    assert sandbox.requests == []
    # The connection is the ERP's again, usable as before.
    backend.book(erp, "INV-9")
    erp.commit()
    assert backend.booked() == {"INV-9"}


def test_commit_delivers_exactly_once(backend: Backend, sandbox: AcmeSandbox) -> None:
    relay = backend.relay(sandbox)
    backend.create_erp_table()
    erp = backend.connect()
    # The ERP's own row factory does not matter to docrelay's reads.
    if backend.name == "sqlite":
        erp.row_factory = sqlite3.Row
    else:
        from psycopg.rows import dict_row

        erp.row_factory = dict_row
    backend.book(erp, "INV-1")
    relay.submit(_doc("inv-1"), connection=erp)
    relay.submit_many([_doc("inv-2")], connection=erp)
    # Not visible to docrelay's own connections (the workers) before the ERP commits.
    assert relay.statuses() == []
    if backend.name != "sqlite":  # on SQLite a worker waits for the ERP's write lock
        relay.run_until_idle()
        assert sandbox.requests == []
    erp.commit()
    assert backend.booked() == {"INV-1"}
    relay.run_until_idle()
    relay.run_until_idle()
    assert {s.id: s.state.value for s in relay.statuses()} == {
        "inv-1": "delivered",
        "inv-2": "delivered",
    }
    assert _received(sandbox) == {"inv-1": 1, "inv-2": 1}
    assert len(_document_requests(sandbox)) == 2


def test_revisions_as_a_normal_submit(backend: Backend, sandbox: AcmeSandbox) -> None:
    """Same revision: unchanged; a new revision of a queued document replaces it; a changed
    document after delivery is refused (the existing rule, submission_refusal), and the
    ERP's transaction goes on with nothing of docrelay's written."""
    relay = backend.relay(sandbox)
    backend.create_erp_table()
    erp = backend.connect()
    first = relay.submit(_doc("inv-1", {"doc": "inv-1", "v": 1}), connection=erp)
    again = relay.submit(_doc("inv-1", {"doc": "inv-1", "v": 1}), connection=erp)
    assert again.revision == first.revision
    second = relay.submit(_doc("inv-1", {"doc": "inv-1", "v": 2}), connection=erp)
    assert second.revision != first.revision
    assert second.state.value == "queued"
    erp.commit()
    relay.run_until_idle()
    assert relay.status("inv-1").state.value == "delivered"
    assert relay.status("inv-1").revision == second.revision

    backend.book(erp, "INV-2")
    with pytest.raises(DocumentError, match="already delivered"):
        relay.submit(_doc("inv-1", {"doc": "inv-1", "v": 3}), connection=erp)
    with pytest.raises(DocumentError, match="given twice"):
        relay.submit_many([_doc("inv-5"), _doc("inv-5")], connection=erp)
    with pytest.raises(DocumentError, match="already stored"):
        relay.submit_many([_doc("inv-6"), _doc("inv-1")], connection=erp)
    with pytest.raises(DocumentError, match="empty"):  # Relay.check, as for any submit
        relay.submit(
            Document(id="inv-7", provider="acme", kind="document", payload=b" "),
            connection=erp,
        )
    backend.book(erp, "INV-3")  # the ERP's transaction is intact
    erp.commit()
    assert backend.booked() == {"INV-2", "INV-3"}
    assert [s.id for s in relay.statuses()] == ["inv-1"]
    assert relay.status("inv-1").revision == second.revision
    assert _received(sandbox) == {"inv-1": 1}


def test_wrong_connections_are_refused_and_write_nothing(
    backend: Backend, sandbox: AcmeSandbox, tmp_path: Path
) -> None:
    relay = backend.relay(sandbox)
    backend.create_erp_table()
    doc = _doc("inv-1")
    with pytest.raises(ConfigError, match="takes a"):
        relay.submit(doc, connection=object())
    other = sqlite3.connect(tmp_path / "other.db")
    with pytest.raises(ConfigError):
        relay.submit(doc, connection=other)
    other.close()
    if backend.name == "sqlite":
        auto = backend.connect(isolation_level=None)
        with pytest.raises(DocumentError, match="autocommit"):
            relay.submit(doc, connection=auto)
    else:
        auto = backend.connect(autocommit=True)
        with pytest.raises(DocumentError, match="autocommit"):
            relay.submit_many([doc], connection=auto)
        with auto.transaction():  # autocommit, but inside a transaction block: taken
            backend.book(auto, "INV-A")
            relay.submit(_doc("inv-a"), connection=auto)
            raise_rollback(auto)
    assert relay.statuses() == []
    assert backend.booked() == set()
    assert sandbox.requests == []


def raise_rollback(conn: Any) -> None:
    from psycopg import Rollback

    raise Rollback()


def test_sqlite_connection_must_be_to_the_store_file(tmp_path: Path, sandbox: AcmeSandbox) -> None:
    backend = Backend("sqlite", tmp_path)
    try:
        relay = backend.relay(sandbox)
        other = tmp_path / "other.db"
        Relay(f"sqlite:///{other}", autoload=False).close()  # docrelay's tables, another file
        conn = sqlite3.connect(other)
        with pytest.raises(ConfigError, match="one SQLite file"):
            relay.submit(_doc("inv-1"), connection=conn)
        conn.close()
        memory = sqlite3.connect(":memory:")
        with pytest.raises(ConfigError, match="in-memory"):
            relay.submit(_doc("inv-1"), connection=memory)
        memory.close()
        assert relay.statuses() == []
        assert Relay(f"sqlite:///{other}", autoload=False).statuses() == []
    finally:
        backend.close()


@pytest.mark.postgres
def test_postgres_connection_must_be_to_the_store_database(
    tmp_path: Path, sandbox: AcmeSandbox
) -> None:
    """Another database of the same server, or a store schema without docrelay's tables, is
    refused before anything is written; the caller's search_path is never changed."""
    import psycopg

    backend = Backend("postgres", tmp_path)
    other_db = f"outbox_other_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(backend.url, autocommit=True)
    try:
        relay = backend.relay(sandbox)
        admin.execute(f"CREATE DATABASE {other_db}")
        other_url = backend.url.rsplit("/", 1)[0] + "/" + other_db
        # docrelay's tables in the same schema of the other database: still refused.
        Relay(other_url, store_options={"schema": backend.schema}, autoload=False).close()
        with psycopg.connect(other_url) as conn:
            with pytest.raises(ConfigError, match="another database"):
                relay.submit(_doc("inv-1"), connection=conn)
            conn.rollback()
            assert conn.execute(f"SELECT COUNT(*) FROM {backend.schema}.documents").fetchone() == (
                0,
            )
        missing = Relay(backend.url, store_options={"schema": backend.schema + "_x"},
                        providers={"acme": {"base_url": sandbox.url, **CREDS}},
                        plugins=[AcmePlugin("acme")], autoload=False)  # fmt: skip
        backend.cleanup.append(missing.close)
        admin.execute(f"DROP SCHEMA {backend.schema}_x CASCADE")
        erp = backend.connect()
        path_before = erp.execute("SHOW search_path").fetchone()
        with pytest.raises(ConfigError, match="no docrelay tables"):
            missing.submit(_doc("inv-1"), connection=erp)
        relay.submit(_doc("inv-2"), connection=erp)
        assert erp.execute("SHOW search_path").fetchone() == path_before
        assert erp.autocommit is False
        erp.commit()
        assert [s.id for s in relay.statuses()] == ["inv-2"]
    finally:
        backend.close()
        admin.execute(f"DROP DATABASE IF EXISTS {other_db}")
        admin.close()


@pytest.mark.postgres
def test_postgres_wake_up_goes_out_with_the_commit(tmp_path: Path, sandbox: AcmeSandbox) -> None:
    """Where the store has a wake-up channel (LISTEN/NOTIFY), the notification is sent in the
    ERP's transaction: none before its commit, none after a rollback."""
    import psycopg

    backend = Backend("postgres", tmp_path)
    try:
        relay = backend.relay(sandbox)
        channel = f"outbox_wake_{uuid.uuid4().hex[:8]}"
        relay.store.wake_channel = channel  # type: ignore[attr-defined]
        listener = psycopg.connect(backend.url, autocommit=True)
        backend.cleanup.append(listener.close)
        listener.execute(f"LISTEN {channel}")

        def pending() -> list[str]:
            got = []
            while select.select([listener.fileno()], [], [], 0.3)[0]:
                got.extend(n.payload for n in listener.notifies(timeout=0.1, stop_after=1))
            return got

        erp = backend.connect()
        relay.submit(_doc("inv-1"), connection=erp)
        assert pending() == []
        erp.rollback()
        assert pending() == []
        relay.submit(_doc("inv-2"), connection=erp)
        assert pending() == []
        erp.commit()
        assert pending() == ["acme"]
    finally:
        backend.close()


# -- crashes --------------------------------------------------------------------------------------

ERP_JOB = r"""
import json, os, sys, time
import docrelay
from acme_testprovider import AcmePlugin

cfg = json.loads(os.environ["OUTBOX_ERP"])
relay = docrelay.Relay(cfg["url"], providers={"acme": {"base_url": cfg["sandbox"],
    "client_id": "acme-client", "client_secret": "acme-secret-value"}},
    plugins=[AcmePlugin("acme")], autoload=False, store_options=cfg["options"])
if cfg["url"].startswith("sqlite"):
    import sqlite3
    erp = sqlite3.connect(cfg["url"].removeprefix("sqlite:///"))
    ph = "?"
else:
    import psycopg
    erp = psycopg.connect(cfg["url"])
    ph = "%s"
erp.execute(f"INSERT INTO {cfg['invoices']} VALUES ({ph}, 100)", ("INV-1",))
doc = docrelay.Document(id="inv-1", provider="acme", kind="document",
    payload=json.dumps({"doc": "inv-1"}).encode(), content_type="application/json")
relay.submit(doc, connection=erp)
if cfg["commit"]:
    erp.commit()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("commit", [False, True], ids=["before-commit", "after-commit"])
def test_erp_process_killed(
    backend: Backend, sandbox: AcmeSandbox, commit: bool, tmp_path: Path
) -> None:
    """SIGKILL between the ERP's statements and its commit: after a restart neither the ERP's
    row nor docrelay's exists and the sandbox saw nothing. SIGKILL after the commit: a
    worker delivers the document once."""
    relay = backend.relay(sandbox)
    backend.create_erp_table()
    cfg = {"url": backend.url, "options": backend.options, "sandbox": sandbox.url,
           "invoices": backend.invoices, "commit": commit}  # fmt: skip
    env = {**os.environ, "OUTBOX_ERP": json.dumps(cfg)}
    env.pop("DOCRELAY_CRASH_AT", None)
    proc = subprocess.Popen([sys.executable, "-c", ERP_JOB], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # "After restart": a new relay (a new process's view) and a worker on the store.
    relay.close()
    worker = backend.relay(sandbox)
    worker.run_until_idle()
    if commit:
        assert backend.booked() == {"INV-1"}
        assert worker.status("inv-1").state.value == "delivered"
        assert _received(sandbox) == {"inv-1": 1}
    else:
        assert backend.booked() == set()
        assert worker.statuses() == []
        assert sandbox.requests == []
    worker.run_until_idle()
    assert sum(_received(sandbox).values()) == (1 if commit else 0)


# -- many ERP transactions, two workers (PostgreSQL) ----------------------------------------------

WORKER = r"""
import json, os, time
from docrelay import Relay
from acme_testprovider import AcmePlugin

cfg = json.loads(os.environ["OUTBOX_WORKER"])
relay = Relay(cfg["url"], store_options=cfg["options"], autoload=False,
    providers={"acme": {"base_url": cfg["sandbox"], "client_id": "acme-client",
               "client_secret": "acme-secret-value"}},
    plugins=[AcmePlugin("acme")],
    engine={"batch_size": 4, "lease_seconds": 30, "retry_wait_initial": 0.01,
            "retry_wait_max": 0.05, "retry_wait_jitter": 0.0, "max_attempts": 20})
deadline = time.monotonic() + 150
while time.monotonic() < deadline:
    relay.run_until_idle()
    if os.path.exists(cfg["stop"]) and relay.store.next_due() is None:
        break
    time.sleep(0.02)
relay.close()
print("done", flush=True)
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_many_erp_transactions_two_workers(tmp_path: Path) -> None:
    threads_n, per_thread = 6, 20
    backend = Backend("postgres", tmp_path)
    sandbox = AcmeSandbox(faults=["error@0.05"], seed=14)
    sandbox.start()
    stop = tmp_path / "stop"
    procs: list[subprocess.Popen[str]] = []
    try:
        backend.relay(sandbox).close()  # creates docrelay's tables
        backend.create_erp_table()
        cfg = {"url": backend.url, "options": backend.options, "sandbox": sandbox.url,
               "stop": str(stop)}  # fmt: skip
        env = {**os.environ, "OUTBOX_WORKER": json.dumps(cfg)}
        env.pop("DOCRELAY_CRASH_AT", None)
        logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
        for log in logs:
            with log.open("w") as f:
                procs.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=f,
                                              stderr=subprocess.STDOUT, text=True))  # fmt: skip
        committed: list[str] = []
        rolled_back: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def erp_thread(t: int) -> None:
            try:
                relay = backend.relay(sandbox)
                erp = backend.connect()
                for i in range(per_thread):
                    n = f"t{t}-{i:02d}"
                    backend.book(erp, f"INV-{n}")
                    if i % 5 == 4:  # a batch in one transaction
                        relay.submit_many([_doc(f"inv-{n}"), _doc(f"inv-{n}-b")], connection=erp)
                        ids = [f"inv-{n}", f"inv-{n}-b"]
                    else:
                        relay.submit(_doc(f"inv-{n}"), connection=erp)
                        ids = [f"inv-{n}"]
                    if i % 4 == 1:
                        erp.rollback()
                        with lock:
                            rolled_back.extend(ids)
                    else:
                        erp.commit()
                        with lock:
                            committed.extend(ids)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=erp_thread, args=(t,)) for t in range(threads_n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        assert errors == []
        stop.touch()
        for p, log in zip(procs, logs, strict=True):
            p.wait(timeout=180)
            assert p.returncode == 0, log.read_text()[-3000:]
            assert "Traceback" not in log.read_text(), log.read_text()[-3000:]

        check = backend.relay(sandbox)
        states = {s.id: s.state.value for s in check.statuses()}
        assert set(states) == set(committed)  # nothing lost, nothing rolled back stored
        assert set(states.values()) == {"delivered"}, collections.Counter(states.values())
        received = _received(sandbox)
        assert set(received) == set(committed)
        assert max(received.values()) == 1  # nothing twice
        assert not set(received) & set(rolled_back)
        assert backend.booked() == {f"INV-{i.removeprefix('inv-')}" for i in committed
                                    if not i.endswith("-b")}  # fmt: skip
        print(f"\n{len(committed)} committed, {len(rolled_back)} rolled back, "
              f"{len(_document_requests(sandbox))} document requests, "
              f"faults {dict(sandbox.faults_injected)}")  # fmt: skip
    finally:
        stop.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sandbox.stop()
        backend.close()


def test_sqlite_store_moves_into_an_existing_erp_file_only_when_shared(
    tmp_path: Path, sandbox: AcmeSandbox
) -> None:
    """An ERP file that has its own tables: refused untouched without ``shared``; with it,
    docrelay's tables go next to the ERP's and the outbox works; a file where a table has
    one of docrelay's names is refused even then."""
    from docrelay.exceptions import StoreError

    path = tmp_path / "erp.db"
    with sqlite3.connect(path) as erp:
        erp.execute("CREATE TABLE invoices (number TEXT PRIMARY KEY, total INTEGER)")
    erp.close()
    with pytest.raises(StoreError, match="other tables"):
        Relay(f"sqlite:///{path}", autoload=False)
    providers = {"acme": {"base_url": sandbox.url, **CREDS}}
    with Relay(f"sqlite:///{path}", store_options={"shared": True}, providers=providers,
               plugins=[AcmePlugin("acme")], autoload=False) as relay:  # fmt: skip
        erp = sqlite3.connect(path)
        with erp:
            erp.execute("INSERT INTO invoices VALUES ('INV-1', 100)")
            relay.submit(_doc("inv-1"), connection=erp)
        erp.close()
        relay.run_until_idle()
        assert relay.status("inv-1").state.value == "delivered"
    # Once docrelay's tables are there, any relay or `docrelay run` opens the file as is.
    with Relay(f"sqlite:///{path}", autoload=False) as relay:
        assert [s.id for s in relay.statuses()] == ["inv-1"]

    clash = tmp_path / "clash.db"
    with sqlite3.connect(clash) as erp:
        erp.execute("CREATE TABLE documents (number TEXT PRIMARY KEY)")
    erp.close()
    with pytest.raises(StoreError):
        Relay(f"sqlite:///{clash}", store_options={"shared": True}, autoload=False)
    with sqlite3.connect(clash) as erp:
        assert [
            r[0] for r in erp.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ] == ["documents"]
    erp.close()


def test_a_pool_proxy_hands_over_its_driver_connection(
    tmp_path: Path, sandbox: AcmeSandbox
) -> None:
    """What SQLAlchemy 2's ``engine.raw_connection()`` and ``Connection.connection`` return:
    a proxy whose ``driver_connection`` is the DB-API connection (here sqlite3)."""
    backend = Backend("sqlite", tmp_path)
    try:
        relay = backend.relay(sandbox)
        backend.create_erp_table()

        class PoolProxy:
            def __init__(self, conn: sqlite3.Connection) -> None:
                self.driver_connection = conn
                self.dbapi_connection = conn

        erp = backend.connect()
        backend.book(erp, "INV-1")
        relay.submit(_doc("inv-1"), connection=PoolProxy(erp))
        erp.commit()
        assert backend.booked() == {"INV-1"}
        assert [s.id for s in relay.statuses()] == ["inv-1"]
    finally:
        backend.close()


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["commit", "rollback"])
def test_postgres_two_transactions_submit_one_id(
    tmp_path: Path, sandbox: AcmeSandbox, first: str
) -> None:
    """Two ERP transactions submit the same id at once: the second waits for the first;
    after its commit it finds the stored document (same revision: unchanged), after its
    rollback it stores its own. One row either way, delivered once."""
    backend = Backend("postgres", tmp_path)
    try:
        relay = backend.relay(sandbox)
        a, b = backend.connect(), backend.connect()
        relay.submit(_doc("inv-1"), connection=a)
        result: list[Any] = []
        started = threading.Event()

        def second() -> None:
            started.set()
            try:
                result.append(relay.submit(_doc("inv-1"), connection=b))
                b.commit()
            except BaseException as exc:  # reported below
                result.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        started.wait(10)
        thread.join(timeout=0.5)
        assert thread.is_alive()  # waits for the first transaction's row
        getattr(a, first)()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert len(result) == 1
        assert not isinstance(result[0], BaseException), result
        assert result[0].state.value == "queued"
        assert [s.id for s in relay.statuses()] == ["inv-1"]
        relay.run_until_idle()
        assert _received(sandbox) == {"inv-1": 1}
    finally:
        backend.close()
