"""Red team: honest answers at the edges (deadlines, leases, limits, bad input).

Each test is a break found by attacking the fixes over real loopback HTTP, with hostile
servers of our own where the sandboxes cannot misbehave enough. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin
from docrelay import HttpRequest, Relay

FAST = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.02,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.2,
}


class DripTLSServer:
    """Accepts TCP connections on 127.0.0.1 and answers a TLS ClientHello with a record
    header announcing 16 KiB, then one byte every *every* seconds, for at most *total*
    bytes. The handshake never completes while it drips; each byte resets the client's
    socket timeout. Records, per connection, whether the client hung up before the drip
    was over."""

    def __init__(self, every: float = 0.2, total: int = 150) -> None:
        self.every = every
        self.total = total
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.hung_up_early: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> DripTLSServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        early = False
        try:
            conn.settimeout(2.0)
            with contextlib.suppress(OSError):
                conn.recv(65536)  # the ClientHello
            conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record, 16384 bytes announced
            conn.settimeout(self.every)
            for _ in range(self.total):
                if self._stop.is_set():
                    break
                try:
                    if conn.recv(1) == b"":  # the client closed its side
                        early = True
                        break
                except TimeoutError:
                    pass
                except OSError:
                    early = True
                    break
                try:
                    conn.sendall(b"\x02")
                except OSError:
                    early = True
                    break
        finally:
            self.hung_up_early.append(early)
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def drip_tls() -> Iterator[DripTLSServer]:
    srv = DripTLSServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def _relay(tmp_path: Path, base_url: str, **engine: Any) -> Relay:
    return Relay(
        f"sqlite:///{tmp_path / 'docrelay.db'}",
        providers={
            "acme": {"base_url": base_url, "client_id": "acme-client", "client_secret": "s3cr3t-x"}
        },
        engine={**FAST, **engine},
        plugins=[AcmePlugin()],
        autoload=False,
    )


def test_redteam_request_deadline_covers_a_dripping_tls_handshake(
    tmp_path: Path, drip_tls: DripTLSServer
) -> None:
    """The total deadline is promised for "connect, headers and body together". Over https
    the watchdog only knows the connection's ``sock`` once the TLS handshake is done, so a
    server that drips its ServerHello (one byte per 0.2 s, each resetting the socket
    timeout) holds the request for the whole drip (12 s here) instead of the 1 s deadline;
    the outcome is then a TLS config_error instead of "past the request deadline"."""
    relay = _relay(
        tmp_path,
        f"https://127.0.0.1:{drip_tls.port}",
        request_deadline=1.0,
        connect_timeout=120.0,
        read_timeout=120.0,
    )
    try:
        rt = relay.engine.runtime("acme")
        response, error = relay.engine.transport.send(rt, HttpRequest("POST", "/documents"))
    finally:
        relay.close()
    assert response is None
    assert error is not None
    # past the deadline: the request may have taken effect, and the message says so
    assert "deadline" in error.message, error
    assert error.kind == "read_timeout", error
    # docrelay hung up while the server was still dripping (the drip lasts 150 x 0.2 s)
    for _ in range(100):
        if drip_tls.hung_up_early:
            break
        time.sleep(0.1)
    assert drip_tls.hung_up_early == [True]


# ---------------------------------------------------------------------------------------------
# A worker stopped (SIGSTOP) after storing its intent, past its lease, then continued
# ---------------------------------------------------------------------------------------------

_WORKER = """
import json, os, sys
from docrelay import Relay
from acme_testprovider import AcmePlugin
relay = Relay(
    os.environ["RT_STORE"],
    store_options=json.loads(os.environ["RT_STORE_OPTIONS"]),
    providers={"acme": {"base_url": os.environ["RT_URL"], "client_id": "acme-client",
                        "client_secret": "acme-secret-value", "rate_limit": "1/3"}},
    engine={"lease_seconds": 1.0, "deferral_initial": 0.05},
    plugins=[AcmePlugin()],
    autoload=False,
)
relay.run_until_idle()
relay.close()
"""


def _acme_posts(sbx: Any, key: str | None = None) -> list[dict[str, Any]]:
    out = [r for r in list(sbx.requests) if r["method"] == "POST" and r["path"] == "/documents"]
    if key is not None:
        out = [
            r
            for r in out
            if any(k.lower() == "idempotency-key" and v == key for k, v in r["headers"].items())
        ]
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_at(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(store URL, store options): a fresh SQLite file or PostgreSQL schema."""
    import os
    import uuid

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'docrelay.db'}", {}
        return
    url = os.environ.get("DOCRELAY_TEST_PG_URL", "")
    if not url:
        pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
    import psycopg

    schema = f"redteam_{uuid.uuid4().hex[:10]}"
    yield url, {"schema": schema}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_redteam_a_worker_continued_after_its_lease_was_taken_over_sends_nothing(
    store_at: tuple[str, dict[str, Any]],
) -> None:
    """Worker A (a real ``python`` process) stores the intent for ``inv-b`` and then waits
    for its rate-limit slot. It is stopped (SIGSTOP) past its 1 s lease; worker B takes the
    document over and delivers it. When A is continued (SIGCONT) it must notice that the
    document is no longer its own; today it sends the delivered document again (a second
    live worker's request, after the delivery)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from acme_testprovider import AcmeSandbox
    from docrelay import Document

    sbx = AcmeSandbox()
    sbx.start()
    store, options = store_at
    rival = Relay(
        store,
        store_options=options,
        providers={
            "acme": {
                "base_url": sbx.url,
                "client_id": "acme-client",
                "client_secret": "acme-secret-value",
            }
        },
        engine={**FAST, "lease_seconds": 1.0},
        plugins=[AcmePlugin()],
        autoload=False,
    )
    proc: subprocess.Popen[bytes] | None = None
    try:
        for doc_id in ("inv-a", "inv-b"):
            rival.submit(Document(id=doc_id, provider="acme", payload=b'{"amount": 10}'))
        env = {**os.environ, "RT_STORE": store, "RT_URL": sbx.url,
               "RT_STORE_OPTIONS": json.dumps(options)}  # fmt: skip
        env.pop("DOCRELAY_CRASH_AT", None)
        proc = subprocess.Popen([sys.executable, "-c", _WORKER], env=env)
        # Wait (bounded) for A to have sent one document and stored its intent for the other.
        waiting: str | None = None
        for _ in range(600):
            states = {d: rival.status(d).state.value for d in ("inv-a", "inv-b")}
            if len(_acme_posts(sbx)) == 1 and "sending" in states.values():
                waiting = next(d for d, s in states.items() if s == "sending")
                break
            time.sleep(0.02)
        assert waiting is not None, "worker A never stored its second intent"
        os.kill(proc.pid, signal.SIGSTOP)
        assert len(_acme_posts(sbx)) == 1  # A is stopped before its second request left
        key = rival.status(waiting).key
        assert key is not None
        # B takes the document over once A's lease has run out, and delivers it.
        for _ in range(200):
            rival.run_until_idle()
            if rival.status(waiting).state.value in ("delivered", "duplicate"):
                break
            time.sleep(0.05)
        assert rival.status(waiting).state.value in ("delivered", "duplicate")
        assert len(_acme_posts(sbx, key)) == 1
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=60) == 0
        # The delivered document was never sent again.
        assert len(_acme_posts(sbx, key)) == 1, [r["status"] for r in _acme_posts(sbx, key)]
        assert rival.status(waiting).state.value in ("delivered", "duplicate")
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=30)
        rival.close()
        sbx.stop()


# ---------------------------------------------------------------------------------------------
# Settings: a value the provider cannot use is refused when the configuration loads
# ---------------------------------------------------------------------------------------------

_SIESMART = {
    "base_url": "http://127.0.0.1:9",
    "token_url": "http://127.0.0.1:9/token",
    "client_id": "c",
    "client_secret": "rt-siesmart-secret",
    "audience": "a",
}
_EBH = {"base_url": "http://127.0.0.1:9", "producer_id": "p", "provider_key": "rt-ebh-key-1"}


@pytest.mark.parametrize(
    ("provider", "extra"),
    [
        pytest.param("siesmart", {"on_conflict": "yes"}),
        pytest.param("siesmart", {"on_conflict": "overwrite-always"}),
        pytest.param("ebh", {"url_style": "newest"}),
        pytest.param("ebh", {"api_version": "v3"}),
    ],
    ids=["on_conflict-yes", "on_conflict-typo", "url_style", "api_version"],
)
def test_redteam_a_provider_setting_outside_its_choices_is_refused_at_load(
    tmp_path: Path, provider: str, extra: dict[str, str]
) -> None:
    """These settings have a fixed set of values, yet any string was taken at load and the
    mistake surfaced only at delivery (SieSmart's ``on_conflict`` only at the first 412, as a
    config_error that pauses the provider mid-run)."""
    from docrelay import ConfigError

    settings = {**(_SIESMART if provider == "siesmart" else _EBH), **extra}
    with pytest.raises(ConfigError, match=next(iter(extra))):
        Relay(f"sqlite:///{tmp_path / 'x.db'}", providers={provider: settings}).close()


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:99999", "http://127.0.0.1:0/", "https://[::1", "http://127.0.0.1:-1/"],
    ids=["port-99999", "port-0", "broken-ipv6", "port-negative"],
)
def test_redteam_a_base_url_with_a_bad_port_is_a_config_error_at_load(
    tmp_path: Path, base_url: str
) -> None:
    """Ports are range-checked everywhere else ([webhooks] port); a base URL with port
    99999 or 0 was accepted, and ``https://[::1`` escaped as a bare ``ValueError`` (the
    command line says "internal error")."""
    from docrelay import ConfigError

    with pytest.raises(ConfigError, match="base_url"):
        Relay(
            f"sqlite:///{tmp_path / 'x.db'}", providers={"ebh": {**_EBH, "base_url": base_url}}
        ).close()


def test_redteam_a_token_url_with_a_bad_port_is_a_config_error_at_load(tmp_path: Path) -> None:
    from docrelay import ConfigError

    with pytest.raises(ConfigError, match="token_url"):
        Relay(
            f"sqlite:///{tmp_path / 'x.db'}",
            providers={"siesmart": {**_SIESMART, "token_url": "http://127.0.0.1:70000/token"}},
        ).close()


# ---------------------------------------------------------------------------------------------
# Header values: every control character, not only CR, LF and NUL
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["tok\x01en", "tok\x1b[2Jen", "tok\x7fen", "tok\x0ben", "tok\x0cen"],
    ids=["soh", "escape", "del", "vertical-tab", "form-feed"],
)
def test_redteam_a_header_value_with_a_control_character_never_reaches_the_wire(
    tmp_path: Path, value: str
) -> None:
    """RFC 9110 allows no control character but HTAB in a field value. docrelay refused
    only CR, LF and NUL, so a token or setting with ESC, DEL or a vertical tab went out to
    the provider, whose 400 would then blame the document (rejected) for a configuration
    fault."""
    from acme_testprovider import AcmeSandbox
    from docrelay import Context, Document, hookimpl

    class BadHeader:
        @hookimpl
        def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
            return {"X-Tenant": value}

    sbx = AcmeSandbox()
    sbx.start()
    relay = Relay(
        f"sqlite:///{tmp_path / 'docrelay.db'}",
        providers={
            "acme": {
                "base_url": sbx.url,
                "client_id": "acme-client",
                "client_secret": "acme-secret-value",
            }
        },
        engine=FAST,
        plugins=[AcmePlugin(), BadHeader()],
        autoload=False,
    )
    try:
        relay.submit(Document(id="inv-1", provider="acme", payload=b'{"amount": 10}'))
        relay.run_until_idle()
        st = relay.status("inv-1")
        assert _acme_posts(sbx) == []
        assert st.state.value == "failed", st
        assert st.outcome is not None
        assert st.outcome.kind.value == "config_error"
        assert "X-Tenant" in (st.outcome.message or "")
        assert value not in (st.reason or "")
    finally:
        relay.close()
        sbx.stop()


# ---------------------------------------------------------------------------------------------
# A lease shorter than the lease keeper's beat
# ---------------------------------------------------------------------------------------------


def test_redteam_a_lease_shorter_than_the_keepers_beat_is_refused_or_still_kept(
    tmp_path: Path,
) -> None:
    """``lease_seconds = 0.01`` passes the range check (> 0), but the lease keeper beats at
        most every 0.05 s, so the lease is expired most of the time while an answer drips in: a
        second live worker claims the document and sends it while the first is still reading
        its answer (it looks the document up, finds it, and settles it under the first worker's
    feet). Either such a lease is refused at load, or it is still kept alive."""
    from acme_testprovider import AcmeSandbox
    from docrelay import ConfigError, Document

    sbx = AcmeSandbox(faults=["drip*1:0.05"])
    sbx.start()
    relays: list[Relay] = []
    try:
        try:
            for _ in range(2):
                relays.append(
                    Relay(
                        f"sqlite:///{tmp_path / 'docrelay.db'}",
                        providers={
                            "acme": {
                                "base_url": sbx.url,
                                "client_id": "acme-client",
                                "client_secret": "acme-secret-value",
                            }
                        },
                        engine={**FAST, "lease_seconds": 0.01, "request_deadline": 30.0},
                        plugins=[AcmePlugin()],
                        autoload=False,
                    )
                )
        except ConfigError:
            return  # refused at load: fine
        first, second = relays
        first.submit(Document(id="inv-1", provider="acme", payload=b'{"amount": 10}'))
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                second.run_until_idle()
                stop.wait(0.01)

        worker = threading.Thread(target=first.run_until_idle)
        worker.start()
        for _ in range(200):
            if _acme_posts(sbx):
                break
            time.sleep(0.01)
        rival = threading.Thread(target=drain)
        rival.start()
        worker.join(timeout=60)
        stop.set()
        rival.join(timeout=60)
        assert len(_acme_posts(sbx)) == 1, [r["status"] for r in _acme_posts(sbx)]
        # The second live worker never claimed it: no lookup of an "interrupted" send.
        lookups = [r for r in list(sbx.requests) if r["method"] == "GET"]
        assert lookups == [], lookups
        assert "reconcile" not in [a.action for a in first.history("inv-1")]
    finally:
        for r in relays:
            r.close()
        sbx.stop()


# ---------------------------------------------------------------------------------------------
# Rate limits: a request to the provider's host counts however its URL spells the host
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.siesmart.test:443/oauth/token",
        "https://API.SieSmart.test/proposals/1",
        "HTTPS://api.siesmart.test:443/proposals/1",
    ],
    ids=["default-port", "upper-case", "scheme-and-port"],
)
def test_redteam_the_same_host_spelled_otherwise_still_takes_a_rate_slot(
    tmp_path: Path, url: str
) -> None:
    """SieSmart's limit is per host and "every request counts". The bucket was chosen by
    comparing netlocs as text, so a token URL or a provider-given URL that names the
    default port explicitly was another server, not limited at all."""
    from docrelay._limits import rate_bucket

    relay = Relay(
        f"sqlite:///{tmp_path / 'x.db'}",
        providers={"siesmart": {**_SIESMART, "base_url": "https://api.siesmart.test",
                                "token_url": "https://api.siesmart.test/oauth/token"}},
    )  # fmt: skip
    try:
        rt = relay.engine.runtime("siesmart")
        assert rate_bucket(rt, "/proposals") is not None
        assert rate_bucket(rt, url) == rate_bucket(rt, "/proposals")
    finally:
        relay.close()


# ---------------------------------------------------------------------------------------------
# An internal error while polling an accepted document
# ---------------------------------------------------------------------------------------------


def test_redteam_an_internal_error_while_polling_never_resends_an_accepted_document(
    tmp_path: Path,
) -> None:
    """The provider accepted the document (202, validation pending); a bug in the plugin's
    ``poll_status`` escapes. The internal-error path moves the document from ``accepted``
    to ``retry_wait``, so it is *sent again*: the provider already has it (a second
    validation at a provider without a key). It must end in a final state with the reason,
    without another send."""
    from acme_testprovider import AcmeSandbox
    from docrelay import Context, Document, hookimpl

    class BrokenPoll(AcmePlugin):
        @hookimpl
        def poll_status(self, document: Document, ctx: Context) -> Any:
            raise RuntimeError("boom in poll_status")

    sbx = AcmeSandbox()
    sbx.start()
    relay = Relay(
        f"sqlite:///{tmp_path / 'docrelay.db'}",
        providers={
            "acme": {
                "base_url": sbx.url,
                "client_id": "acme-client",
                "client_secret": "acme-secret-value",
            }
        },
        engine={**FAST, "max_attempts": 3, "poll_initial": 0.01, "poll_max": 0.02},
        plugins=[BrokenPoll()],
        autoload=False,
    )
    try:
        relay.submit(Document(id="inv-1", provider="acme", kind="async", payload=b'{"amount": 10}'))
        for _ in range(200):
            relay.run_until_idle()
            if relay.status("inv-1").state.value in ("failed", "delivered", "rejected"):
                break
            time.sleep(0.02)
        st = relay.status("inv-1")
        assert len(_acme_posts(sbx)) == 1, [r["status"] for r in _acme_posts(sbx)]
        assert st.state.value == "failed", st
        assert "boom in poll_status" in (st.reason or "")
    finally:
        relay.close()
        sbx.stop()
