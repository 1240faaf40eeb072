"""Red team: the hot-path shortcuts of issue 13 (the request cache, the first attempt outside
stamina's retry context, the payloads kept apart), attacked over real loopback HTTP against
the Acme sandbox; nothing mocked, no timed assertions."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import Context, Document, DocumentError, HttpRequest, ProviderInfo, Relay, hookimpl
from docrelay.sandbox import Route, SandboxRequest, SandboxResponse

CREDS = {"client_id": "acme-client", "client_secret": "acme-secret-value"}
FAST = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "retry_wait_jitter": 0.0,
        "deferral_initial": 0.01, "deferral_max": 0.02, "poll_initial": 0.01}  # fmt: skip


def _doc(
    doc_id: str, body: bytes = b'{"amount": 1}', metadata: dict[str, str] | None = None
) -> Document:
    return Document(id=doc_id, provider="acme", payload=body, content_type="application/json",
                    metadata=metadata or {})  # fmt: skip


def _posts(sbx: AcmeSandbox) -> list[dict[str, Any]]:
    return [r for r in list(sbx.requests) if r["method"] == "POST" and r["path"] == "/documents"]


def _h(req: dict[str, Any], name: str) -> str | None:
    return next((str(v) for k, v in req["headers"].items() if k.lower() == name.lower()), None)


# -- the request cache and tokens ---------------------------------------------------------------


class SessionSandbox(AcmeSandbox):
    """Acme whose documents also carry the session token in ``X-Session`` (as providers that
    want the token in the envelope or the query do). The first POST answers 503; the second
    finds the provider has forgotten every token (401); later POSTs are taken in when
    ``X-Session`` is a token the provider knows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = 0

    def routes(self) -> list[Route]:
        return [Route("POST", re.compile(r"^/documents$"), self._session_post), *super().routes()]

    def _session_post(self, req: SandboxRequest) -> SandboxResponse:
        with self.lock:
            self.seen += 1
            seen = self.seen
        if seen == 1:
            return SandboxResponse.json(503, {"message": "busy"})
        if seen == 2:
            self.tokens.expire_all()
            return SandboxResponse.json(401, {"message": "invalid or expired token"})
        if self.tokens.subject(req.header("X-Session")) is None:
            return SandboxResponse.json(401, {"message": "session token expired"})
        return self._post(req)


class SessionAcme(AcmePlugin):
    """Acme declaring ``reuse_request``, whose request carries the session token."""

    @hookimpl
    def provider_info(self) -> ProviderInfo:
        return attrs.evolve(super().provider_info(), reuse_request=True)

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        from acme_testprovider import _fetch_token  # type: ignore[attr-defined]

        token = ctx.token(str(ctx.settings["client_id"]), _fetch_token)
        req = super().build_request(document, ctx)
        return req.with_headers({"X-Session": token})


def test_a_reused_request_does_not_carry_a_token_the_provider_refused(tmp_path: Any) -> None:
    """Break: ``reuse_request`` caches a build that read a token when the round's context had
    used that token already (the check compares the context's used tokens before and after
    the build, so a second attempt's build looks token-free). After the provider refused the
    token (401, the core fetched a new one), the cached request still carries the old token:
    every later attempt and round sends it again and the document is never taken in.
    Should: a build that reads a token is never reused (the hook's documented promise)."""
    sbx = SessionSandbox()
    sbx.start()
    try:
        relay = Relay(
            f"sqlite:///{tmp_path / 'docrelay.db'}",
            providers={"acme": {"base_url": sbx.url, **CREDS}},
            engine={**FAST, "inprocess_attempts": 4},
            plugins=[SessionAcme()],
            autoload=False,
        )
        try:
            relay.submit(_doc("inv-1"))
            relay.run_until_settled(timeout=20)
            posts = _posts(sbx)
            issued = sbx.tokens.issued_tokens()
            state = relay.status("inv-1").state.value
        finally:
            relay.close()
    finally:
        sbx.stop()
    # every POST after the 401 carries a token issued after it, the one in Authorization
    assert len(issued) >= 2
    stale = [p for p in posts[2:] if _h(p, "X-Session") == issued[0]]
    assert stale == [], f"{len(stale)} of {len(posts) - 2} POSTs after the 401 sent the old token"
    assert state == "delivered"


# -- hostile text in a provider's answer --------------------------------------------------------

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")


def _store(kind: str, tmp_path: Path, name: str) -> tuple[str, dict[str, Any]]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'docrelay.db'}", {}
    if not PG_URL:
        if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
            pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set", pytrace=False)
        pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
    import psycopg

    schema = f"redb_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    url = PG_URL
    if kind == "postgres-old-strings":  # a server where backslashes escape in '...'
        sep = "&" if "?" in url else "?"
        url += sep + "options=-c%20standard_conforming_strings%3Doff"
    return url, {"schema": schema}


def _drop_schema(options: dict[str, Any]) -> None:
    if options.get("schema"):
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {options['schema']} CASCADE")


class HostileAnswers(AcmeSandbox):
    """Acme whose answers to documents marked ``HOSTILE`` carry *text* in their message (503)
    or in the id of the document taken in (200): JSON escapes any character, a NUL or a lone
    surrogate among them."""

    def __init__(self, text: str, status: int) -> None:
        super().__init__()
        self.text, self.status = text, status

    def routes(self) -> list[Route]:
        return [Route("POST", re.compile(r"^/documents$"), self._hostile), *super().routes()]

    def _hostile(self, req: SandboxRequest) -> SandboxResponse:
        if b"HOSTILE" not in req.body:
            return self._post(req)
        if self.status == 200:
            self.record_effect("document_received", self.text, idempotency_key=None, body="")
            return SandboxResponse.json(200, {"id": self.text})
        return SandboxResponse.json(self.status, {"message": self.text})


TEXTS = {"nul": "busy\x00now", "surrogate": "busy \ud800 now", "quotes": "it's \\ $$ x $$ ;--"}


@pytest.mark.parametrize("status", [503, 200])
@pytest.mark.parametrize("text", sorted(TEXTS))
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_provider_answer_with_any_character_is_stored_as_the_provider_gave_it(
    kind: str, text: str, status: int, tmp_path: Path
) -> None:
    """Break: a provider's 503 message (it goes into the document's ``reason``) or 200 id (its
    ``provider_ref``) with a NUL (PostgreSQL text refuses it) or a lone surrogate (JSON's
    ``\\ud800``, which no UTF-8 encoder takes) made the store's write raise: the document
    ended ``unknown`` with "internal error: DataError / UnicodeEncodeError" instead of the
    provider's answer (a 200 was turned into a resend). Should: the answer is stored (the
    character replaced in the plain-text columns; the outcome's JSON keeps it escaped), and
    the batch's other documents are unaffected."""
    url, options = _store(kind, tmp_path, text)
    sbx = HostileAnswers(TEXTS[text], status)
    sbx.start()
    try:
        relay = Relay(
            url,
            store_options=options,
            providers={"acme": {"base_url": sbx.url, **CREDS}},
            engine={**FAST, "inprocess_attempts": 1},
            plugins=[AcmePlugin()],
            autoload=False,
        )
        try:
            for i in range(3):
                body = b'{"HOSTILE": 1}' if i == 1 else b'{"amount": 1}'
                relay.submit(_doc(f"inv-{i}", body))
            relay.run_until_idle()
            statuses = {i: relay.status(f"inv-{i}") for i in range(3)}
        finally:
            relay.close()
    finally:
        sbx.stop()
        _drop_schema(options)
    assert statuses[0].state.value == statuses[2].state.value == "delivered"
    hostile = statuses[1]
    assert "internal error" not in (hostile.reason or ""), hostile.reason
    if status == 200:
        assert hostile.state.value == "delivered"
    else:
        assert hostile.state.value == "retry_wait"
        assert hostile.outcome is not None
        assert hostile.outcome.message == TEXTS[text]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_nul_in_one_document_s_metadata_does_not_break_every_lookup(
    kind: str, tmp_path: Path
) -> None:
    """Break (PostgreSQL): metadata ``{"order": "a\\x00b"}`` was stored (``submit`` took it,
    as JSON's ``\\u0000``, which jsonb refuses), and from then on ``find`` with any metadata,
    for any document, raised an untranslated psycopg error (the hold hooks that look up
    other documents with it). Now: a metadata key or value with a NUL or a lone surrogate
    is refused at submit with a one-line DocumentError; the other documents are found."""
    url, options = _store(kind, tmp_path, "meta")
    providers = {"acme": {"base_url": "http://127.0.0.1:9", **CREDS}}
    relay = Relay(url, store_options=options, providers=providers, plugins=[AcmePlugin()],
                  autoload=False)  # fmt: skip
    try:
        relay.submit(_doc("plain", b"{}", {"order": "o-1"}))
        for bad in ({"order": "a\x00b"}, {"order": "a\ud800b"}, {"o\x00": "x"}):
            with pytest.raises(DocumentError, match="not storable text"):
                relay.submit(_doc("nul", b"{}", bad))
        assert [r.id for r in relay.store.find("acme", None, {"order": "o-1"})] == ["plain"]
    finally:
        relay.close()
        _drop_schema(options)


# -- the PostgreSQL server restarted in the middle of a batch -----------------------------------

RESTART = os.environ.get("DOCRELAY_TEST_PG_RESTART") == "1"


class RestartingAcme(AcmePlugin):
    """Acme that restarts the PostgreSQL server (as root, ``pg_ctlcluster``) once, at *point*:
    ``claim`` (in the batch's first build, after the claim, before the intents), or
    ``response`` (in the first classification: the intents stored, the request answered,
    its outcome not yet)."""

    def __init__(self, point: str, mode: str) -> None:
        super().__init__()
        self.point, self.mode, self.done = point, mode, False

    def _restart(self) -> None:
        if self.done:
            return
        self.done = True
        subprocess.run(
            [shutil.which("pg_ctlcluster") or "/usr/bin/pg_ctlcluster", "15", "main", "restart",
             "-m", self.mode],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        if self.point == "claim":
            self._restart()
        return super().build_request(document, ctx)

    @hookimpl
    def classify_response(self, response: Any, error: Any, ctx: Context) -> Any:
        if self.point == "response" and response is not None:
            self._restart()
        return super().classify_response(response, error, ctx)


@pytest.mark.skipif(not RESTART, reason="restarts the shared PostgreSQL server: set "
                    "DOCRELAY_TEST_PG_RESTART=1 (as root) to run")  # fmt: skip
@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("point", ["claim", "response"])
@pytest.mark.parametrize("dedupe", [True, False])
def test_the_database_restarted_mid_batch_loses_nothing_and_sends_nothing_twice(
    point: str, mode: str, dedupe: bool, tmp_path: Path
) -> None:
    """A batch of 4 on PostgreSQL; the server restarted (``fast``: a clean shutdown;
    ``immediate``: a crash, the claim's asynchronous commit may be lost) between the claim
    and the intents, or between the intents and the outcomes. Every document ends delivered
    or duplicate, the provider takes each in once, and every request for a document carries
    the same key."""
    url, options = _store("postgres", tmp_path, f"restart_{point}")
    sbx = AcmeSandbox(dedupe=dedupe)
    sbx.start()
    try:
        relay = Relay(
            url,
            store_options=options,
            providers={"acme": {"base_url": sbx.url, **CREDS}},
            engine={**FAST, "lease_seconds": 2.0, "batch_size": 4},
            plugins=[RestartingAcme(point, mode)],
            autoload=False,
        )
        try:
            for i in range(4):
                relay.submit(_doc(f"inv-{i}", f'{{"n": {i}}}'.encode()))
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    result = relay.run_until_settled(timeout=30)
                except Exception:  # the server is coming back
                    time.sleep(0.5)
                    continue
                if result.settled:
                    break
                time.sleep(0.5)
            states = {s.id: s.state.value for s in relay.statuses()}
        finally:
            relay.close()
    finally:
        sbx.stop()
        _drop_schema(options)
    taken = collections.Counter(e["body"] for e in list(sbx.effects)
                                if e["kind"] == "document_received")  # fmt: skip
    keys = {_h(r, "Idempotency-Key") for r in _posts(sbx)}
    assert all(s in ("delivered", "duplicate") for s in states.values()), states
    assert sorted(taken.values()) == [1, 1, 1, 1], taken
    assert len(keys) == 4, keys  # one key per document, whatever was sent again


# -- SQLite schema 2: payloads apart, under churn and SIGKILL -----------------------------------

CHURN = r"""
import json, os, sqlite3, sys
from docrelay import Document, DocumentError, Relay
from acme_testprovider import AcmePlugin

role, store, url = sys.argv[1], sys.argv[2], sys.argv[3]
relay = Relay(f"sqlite:///{store}",
              providers={"acme": {"base_url": url, "client_id": "acme-client",
                                  "client_secret": "acme-secret-value"}},
              engine={"lease_seconds": 0.5, "retry_wait_initial": 0.01, "retry_wait_max": 0.02,
                      "inprocess_attempts": 1},
              plugins=[AcmePlugin()], autoload=False)


def doc(i, v, who):
    body = json.dumps({"doc": i, "v": v, "by": who, "pad": "x" * (v % 7) * 300}).encode()
    return Document(id=f"d{i}", provider="acme", payload=body, content_type="application/json",
                    metadata={"v": str(v), "by": who})


n = 0
if role == "deliver":
    print("ready", flush=True)
    relay.run_forever()
elif role == "submit":
    while True:
        n += 1
        try:  # a delivered document takes no correction
            relay.submit(doc(n % 12, n, "relay"))
        except DocumentError:
            pass
        if n % 5 == 0:
            relay.submit_many([doc(f"{os.getpid()}-{n}-{k}", n, "many") for k in range(3)])
        print(n, flush=True)
else:  # the outbox: corrections in the ERP's own transactions
    conn = sqlite3.connect(store, timeout=30, isolation_level=None)
    while True:
        n += 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            relay.submit(doc(n % 12, 10_000 + n, "outbox"), connection=conn)
        except DocumentError:
            conn.execute("ROLLBACK")
        else:
            conn.execute("COMMIT")
        print(n, flush=True)
"""


def test_payloads_apart_survive_sigkill_of_every_writer_and_reader(tmp_path: Path) -> None:
    """Three processes on one SQLite store: one submits corrections and bulk batches
    (payloads apart), one writes corrections through the outbox in its own transactions
    (payloads in the row), one delivers. Each is killed with SIGKILL after some progress and
    started again, several times. Then every document's stored payload is its stored
    revision's (the revision recomputed from what is read back), never empty, and every
    document the provider took in carried a body of one of that document's revisions."""
    from acme_testprovider import AcmeSandbox as Sbx

    db = tmp_path / "docrelay.db"
    script = tmp_path / "churn.py"
    script.write_text(CHURN)
    sbx = Sbx()
    sbx.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    env["DOCRELAY_DISABLE_PLUGIN_AUTOLOAD"] = "1"

    def start(role: str) -> subprocess.Popen[str]:
        argv = [sys.executable, str(script), role, str(db), sbx.url]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip

    try:
        Relay(f"sqlite:///{db}", providers={"acme": {"base_url": sbx.url, **CREDS}},
              plugins=[AcmePlugin()], autoload=False).close()  # fmt: skip
        for round_ in range(4):
            procs = {r: start(r) for r in ("deliver", "submit", "outbox")}
            for role, p in procs.items():
                assert p.stdout is not None
                for _ in range(1 if role == "deliver" else 15 + 7 * round_):
                    line = p.stdout.readline()
                    assert line, f"{role} ended: {p.stderr.read() if p.stderr else ''}"
            for p in procs.values():
                p.send_signal(signal.SIGKILL)
            for p in procs.values():
                p.wait(timeout=30)
                if p.stdout:
                    p.stdout.close()
                if p.stderr:
                    p.stderr.close()
        conn = sqlite3.connect(db)
        try:
            from docrelay._store.sql import DOC_COLUMNS, doc_columns
            from docrelay._store.sqlite import SQLiteStore

            columns = doc_columns("documents", SQLiteStore.payload_column)
            rows = conn.execute(f"SELECT {columns} FROM documents").fetchall()
        finally:
            conn.close()
    finally:
        sbx.stop()
    cols = list(DOC_COLUMNS)
    bad = []
    for row in rows:
        r = dict(zip(cols, row, strict=True))
        d = Document(id=r["id"], provider=r["provider"], payload=bytes(r["payload"] or b""),
                     kind=r["kind"], content_type=r["content_type"],
                     metadata=json.loads(r["metadata"]))  # fmt: skip
        if not d.payload or d.revision != r["revision"]:
            bad.append((r["id"], r["state"], len(d.payload)))
    assert len(rows) > 12
    assert bad == []
    # what the provider took in was a body of some revision (never an empty or foreign one)
    for e in list(sbx.effects):
        if e["kind"] == "document_received":
            body = json.loads(e["body"])
            assert body["by"] in ("relay", "outbox", "many"), body


# -- hook callers resolved once -----------------------------------------------------------------


class Watcher:
    """A middleware plugin counting the exchanges and headers asked of it; with *fail_at*,
    it raises at that exchange (the host disables it)."""

    def __init__(self, name: str, fail_at: int | None = None) -> None:
        self.__name__ = name
        self.fail_at = fail_at
        self.exchanges = 0
        self.headers = 0
        self.after = 0  # calls after it raised

    @hookimpl
    def on_exchange(self, purpose: str) -> None:
        if self.fail_at is not None and self.exchanges >= self.fail_at:
            self.after += 1
        self.exchanges += 1
        if self.fail_at is not None and self.exchanges == self.fail_at:
            raise RuntimeError("observer broke")

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        if self.fail_at is not None and self.exchanges >= self.fail_at:
            self.after += 1
        self.headers += 1
        return {f"X-{self.__name__}": "1"}


def test_a_middleware_disabled_mid_run_is_not_called_again_and_the_others_are(
    tmp_path: Path,
) -> None:
    """A middleware that raises in ``on_exchange`` at the third exchange is disabled; the hook
    callers resolved before it are resolved again: it is never called after (requests
    prepared before, in the batch, keep its header), and the other middleware sees every
    exchange and prepares every request."""
    sbx = AcmeSandbox(faults=["error*3:503"])
    sbx.start()
    broken, steady = Watcher("broken", fail_at=3), Watcher("steady")
    try:
        relay = Relay(
            f"sqlite:///{tmp_path / 'docrelay.db'}",
            providers={"acme": {"base_url": sbx.url, **CREDS}},
            engine={**FAST, "inprocess_attempts": 2},
            plugins=[AcmePlugin(), broken, steady],
            autoload=False,
        )
        try:
            for i in range(4):
                relay.submit(_doc(f"inv-{i}"))
            relay.run_until_settled(timeout=20)
            states = {s.id: s.state.value for s in relay.statuses()}
            plugins = {p.name: p.status for p in relay.plugins()}
        finally:
            relay.close()
    finally:
        sbx.stop()
    posts = _posts(sbx)
    assert set(states.values()) == {"delivered"}, states
    assert plugins["broken"] == "error"
    assert broken.exchanges == 3
    assert broken.after == 0, "the disabled middleware was called again"
    assert steady.exchanges == len([r for r in sbx.requests if r["path"] != "/_sandbox"])
    assert steady.headers == len(posts)


HOSTILE_VALUES = ["it's \\ $$ $x$ ;-- %s %(a)s {}", "nul\x00here", "lone \ud800 surrogate",
                  "\\x00 \\' E'\\\\'", "é" * 50_000]  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "postgres-old-strings"])
def test_a_batch_of_changes_with_hostile_values_is_stored_and_read_back(
    kind: str, tmp_path: Path
) -> None:
    """One ``apply_many`` (PostgreSQL: one message, values bound by client-side quoting) of
    changes whose reason, provider reference, provider state and attempt outcome carry
    quotes, backslashes, dollar quotes, placeholders, a NUL, a lone surrogate and a 100 KB
    value, one of them with a lost lease: each change is stored (the provider state and
    the outcome exactly; the plain-text columns with U+FFFD for what no column takes), the
    lost one is reported and writes nothing."""
    from docrelay import Outcome, OutcomeKind
    from docrelay._models import Attempt, DocState
    from docrelay._records import Transition, storable_text

    url, options = _store(kind, tmp_path, "batch")
    from docrelay._store import open_store

    store = open_store(url, **options)
    try:
        n = len(HOSTILE_VALUES)
        store.submit_many([_doc(f"h-{i}") for i in range(n + 1)], 1000.0)
        claimed = store.claim("w1", 1000.0, 60.0, n)
        claimed += store.claim("w2", 1000.0, 60.0, 1)  # a lease another worker holds
        assert len(claimed) == n + 1
        stolen = claimed[-1].id
        changes = []
        for i, rec in enumerate(claimed):
            v = HOSTILE_VALUES[i % n]
            out = Outcome(kind=OutcomeKind.RETRY, status=503, message=v, rule="x:" + v[:20])
            changes.append((rec.id, "w1", Transition(
                state=DocState.RETRY_WAIT, reason=v, next_at=2000.0, outcome=out,
                provider_ref=v, provider_state={"k'\\$$": v, "n": i},
                attempt=Attempt(doc_id=rec.id, number=1, revision=rec.document.revision,
                                key=f"K-{i}", action="send", started_at=1000.0, status=503,
                                outcome=out),
            )))  # fmt: skip
        assert store.apply_many(changes, 1001.0) == [stolen]
        got = {r.id: r for r in store.select()}
        for i, rec in enumerate(claimed[:-1]):
            v = HOSTILE_VALUES[i]
            r = got[rec.id]
            assert r.state == DocState.RETRY_WAIT
            assert r.provider_state == {"k'\\$$": v, "n": i}
            assert r.outcome is not None
            assert r.outcome.message == v
            assert r.reason == storable_text(v)
            assert r.provider_ref == storable_text(v)
            assert [a.outcome.message for a in store.history(rec.id) if a.outcome] == [v]
        assert got[stolen].state == DocState.QUEUED
        assert got[stolen].lease_owner == "w2"
        assert store.history(stolen) == []
    finally:
        store.close()
        _drop_schema(options)


class PausingAcme(AcmePlugin):
    """Acme declaring ``reuse_request`` whose first build waits (claimed, no intent yet)
    until the test has submitted a correction."""

    def __init__(self) -> None:
        super().__init__()
        self.building, self.corrected = threading.Event(), threading.Event()

    @hookimpl
    def provider_info(self) -> ProviderInfo:
        return attrs.evolve(super().provider_info(), reuse_request=True)

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        if not self.building.is_set():
            self.building.set()
            self.corrected.wait(timeout=20)
        return super().build_request(document, ctx)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_correction_between_the_claim_and_the_intent(kind: str, tmp_path: Path) -> None:
    """A worker has claimed revision 1 and is building its request (the batch's intents not
    yet stored) when another relay on the same store submits revision 2. Revision 1 is
    never sent (its intent meets the lost lease); revision 2 goes out with its own body and
    ends delivered; the store's payload is revision 2's."""
    url, options = _store(kind, tmp_path, "race")
    sbx = AcmeSandbox()
    sbx.start()
    providers = {"acme": {"base_url": sbx.url, **CREDS}}
    plugin = PausingAcme()
    try:
        worker = Relay(url, store_options=options, providers=providers,
                       engine={**FAST, "lease_seconds": 30}, plugins=[plugin],
                       autoload=False)  # fmt: skip
        erp = Relay(url, store_options=options, providers=providers, plugins=[AcmePlugin()],
                    autoload=False)  # fmt: skip
        try:
            erp.submit(_doc("inv-1", b'{"v": 1}'))
            t = threading.Thread(target=worker.run_until_idle)
            t.start()
            assert plugin.building.wait(timeout=20)
            erp.submit(_doc("inv-1", b'{"v": 2}'))
            plugin.corrected.set()
            t.join(timeout=30)
            worker.run_until_settled(timeout=20)
            status = worker.status("inv-1")
            stored = worker.store.get("inv-1")
        finally:
            plugin.corrected.set()
            worker.close()
            erp.close()
    finally:
        sbx.stop()
        _drop_schema(options)
    bodies = [e["body"] for e in list(sbx.effects) if e["kind"] == "document_received"]
    assert bodies == ['{"v": 2}']
    assert status.state.value == "delivered"
    assert stored is not None
    assert stored.document.payload == b'{"v": 2}'
    assert stored.document.revision == _doc("inv-1", b'{"v": 2}').revision


# -- in-process budgets (the first attempt outside stamina's context changed none of them) ------


def _one_round(tmp_path: Path, faults: list[str], engine: dict[str, Any]) -> list[int]:
    sbx = AcmeSandbox(faults=faults)
    sbx.start()
    try:
        relay = Relay(f"sqlite:///{tmp_path / 'docrelay.db'}",
                      providers={"acme": {"base_url": sbx.url, **CREDS}},
                      engine={**FAST, **engine}, plugins=[AcmePlugin()],
                      autoload=False)  # fmt: skip
        try:
            relay.submit(_doc("inv-1"))
            relay.run_until_idle()
        finally:
            relay.close()
    finally:
        sbx.stop()
    return [r["status"] for r in _posts(sbx)]


@pytest.mark.parametrize("n", [1, 3])
def test_a_round_sends_at_most_inprocess_attempts(tmp_path: Path, n: int) -> None:
    """Break (older than issue 13): a round of plain 503s sent ``inprocess_attempts + 2``
    requests (stamina's context has room for a token refresh and a re-read, which plain
    retries used up). ``inprocess_attempts`` is the sends of a round, the first included,
    as docs/configuration.md says."""
    assert len(_one_round(tmp_path, ["error@1.0:503"], {"inprocess_attempts": n})) == n


def test_a_retry_after_past_the_in_process_timeout_is_not_waited(tmp_path: Path) -> None:
    """Break (older than issue 13): ``inprocess_timeout = 0.3``, a 429 with ``Retry-After: 1``
    (under the cap): the engine waited the second out and sent again (stamina checks its
    timeout after the wait). Now the wait that does not fit in the round ends it, stored as
    the next attempt's time: one send."""
    posts = _one_round(tmp_path, ["throttle@1.0:1"], {"inprocess_attempts": 3,
                                                      "inprocess_timeout": 0.3})  # fmt: skip
    assert posts == [429]
