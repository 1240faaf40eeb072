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
from docrelay import HttpRequest, Relay
from docrelay._acme import AcmePlugin

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
