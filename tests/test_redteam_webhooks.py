"""Red team against the webhook receiver's guards (issue 13): slow clients at waitress's
connection limit, and the ``/metrics`` page when it is off.

Breaks found: a client holding idle keep-alive connections (one quick request each, then
nothing) filled the connection limit for as long as waitress's inactivity timeout (120 s,
renewed by one request), since only connections with a request in part were shed; and a
legitimate notification whose body arrives in more than one segment is evicted at the
limit once enough slow connections opened after it (left as a strict xfail).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docrelay import Relay
from docrelay._serve import WebhookServer


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    s = WebhookServer(_app).__enter__()
    try:
        yield s
    finally:
        s.__exit__()


def _port(server: WebhookServer) -> int:
    return int(server.url.split(":")[2].split("/")[0])


def _at_the_limit(server: WebhookServer) -> None:
    """Wait (bounded) until the server holds as many connections as it may."""
    inner = server._server
    for _ in range(200):
        if len(inner._map) >= inner.adj.connection_limit:
            return
        time.sleep(0.05)


def _answer(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except OSError as exc:  # reset
        return repr(exc).encode()


def test_idle_keep_alive_connections_cannot_fill_the_connection_limit(
    server: WebhookServer,
) -> None:
    """110 connections, each after one quick GET /healthz kept open and silent: a
    provider's notification on a new connection is still answered."""
    port = _port(server)
    held: list[socket.socket] = []
    try:
        for _ in range(110):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _answer(s)
        legit = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.append(legit)
        legit.sendall(b"POST /n HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        assert _answer(legit).startswith(b"HTTP/1.1 200"), "the notification was refused"
    finally:
        for s in held:
            s.close()


@pytest.mark.xfail(
    strict=True,
    reason="break: at the connection limit the connection waiting longest for a whole "
    "request is shed, so a notification whose body comes in two segments is evicted by "
    "slow connections opened after it (no small, clearly right policy: rate or per-source "
    "shedding)",
)
def test_a_notification_in_flight_is_not_evicted_by_slow_connections_opened_after_it(
    server: WebhookServer,
) -> None:
    port = _port(server)
    held: list[socket.socket] = []
    try:
        legit = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.append(legit)
        legit.sendall(b'POST /n HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9\r\n\r\n{"a":')
        for _ in range(105):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
            s.sendall(b"POST /n HTTP/1.1\r\n")
        _at_the_limit(server)
        time.sleep(0.3)  # a few loop turns: the shedding has run (not a timed assertion)
        with contextlib.suppress(OSError):
            legit.sendall(b" 1}\r\n")
        assert _answer(legit).startswith(b"HTTP/1.1 200"), "the notification was cut off"
    finally:
        for s in held:
            s.close()


PATHS = [
    "/metrics", "/metrics/", "/METRICS", "/Metrics", "/%6detrics", "/%6Detrics", "//metrics",
    "/./metrics", "/webhooks/../metrics", "/metrics?x=1", "/metrics;x", "/metrics%00",
    "/metrics%2F", "/healthz/../metrics", "http://127.0.0.1/metrics",
]  # fmt: skip


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS"])
def test_the_metrics_page_is_not_served_when_it_is_off(tmp_path: Path, method: str) -> None:
    """Without ``[webhooks] metrics = true`` no path variant nor method gives the page."""
    relay = Relay(f"sqlite:///{tmp_path / 'm.db'}", providers={})
    try:
        with WebhookServer(relay.wsgi_app) as served:
            port = _port(served)
            for path in PATHS:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(
                        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                    )
                    answer = b""
                    while chunk := s.recv(65536):
                        answer += chunk
                head = answer.split(b"\r\n", 1)[0]
                assert not head.startswith(b"HTTP/1.1 200"), (path, answer[:300])
                assert b"docrelay_" not in answer, (path, answer[:300])
                assert b"# HELP" not in answer, (path, answer[:300])
    finally:
        relay.close()
