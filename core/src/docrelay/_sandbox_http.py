"""The sandbox's HTTP layer and fault specs: requests, answers, routes, the threaded
loopback server, and :func:`parse_fault` (re-exported by :mod:`docrelay.sandbox`)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs

__all__ = ["FAULT_NAMES", "Fault", "Route", "SandboxRequest", "SandboxResponse", "parse_fault"]

_FAULT_RE = re.compile(
    r"^(?P<name>error|throttle|drop|slow|drip|token-ttl)"
    r"(?:@(?P<rate>[0-9.]+)|\*(?P<count>[0-9]+))?(?::(?P<arg>[A-Za-z0-9.]+))?$"
)
FAULT_NAMES = ("error", "throttle", "drop", "slow", "drip", "token-ttl")


@attrs.define
class Fault:
    """One fault: by ``rate`` (a probability per request) or ``count`` (the next N requests)."""

    name: str
    rate: float | None = None
    count: int | None = None
    arg: str | None = None

    def spec(self) -> str:
        s = self.name
        if self.rate is not None:
            s += f"@{self.rate:g}"
        if self.count is not None:
            s += f"*{self.count}"
        if self.arg is not None:
            s += f":{self.arg}"
        return s


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec (see the module docstring); :class:`ValueError` with one line."""
    m = _FAULT_RE.match(spec.strip())
    if not m:
        raise ValueError(
            f"invalid fault spec {spec!r}: expected NAME[@RATE|*COUNT][:ARG] with NAME one of "
            + ", ".join(FAULT_NAMES)
        )
    rate = float(m["rate"]) if m["rate"] is not None else None
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ValueError(f"invalid fault spec {spec!r}: rate must be between 0 and 1")
    count = int(m["count"]) if m["count"] is not None else None
    name, arg = m["name"], m["arg"]
    if name == "token-ttl":
        if arg is None:
            raise ValueError(f"invalid fault spec {spec!r}: token-ttl needs :SECONDS")
        float(arg)
    elif rate is None and count is None:
        rate = 1.0
    if name in ("slow", "drip") and arg is not None:
        float(arg)
    if name == "error" and arg is not None and not (arg.isdigit() and 500 <= int(arg) <= 599):
        raise ValueError(f"invalid fault spec {spec!r}: error takes a 5xx status")
    return Fault(name=name, rate=rate, count=count, arg=arg)


@attrs.frozen
class SandboxRequest:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client: str
    params: Mapping[str, str] = attrs.field(factory=dict)

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lname:
                return v
        return default

    def json(self) -> Any:
        """The body as JSON; :class:`ValueError` when it is not."""
        return json.loads(self.body)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@attrs.frozen
class SandboxResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: Seconds between the bytes of the body (the ``drip`` fault); ``None``: one write.
    drip: float | None = None

    @classmethod
    def json(
        cls, status: int, data: Any, headers: Mapping[str, str] | None = None
    ) -> SandboxResponse:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return cls(status=status, body=json.dumps(data).encode(), headers=h)

    @classmethod
    def empty(cls, status: int, headers: Mapping[str, str] | None = None) -> SandboxResponse:
        return cls(status=status, body=b"", headers=dict(headers or {}))


@attrs.frozen
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[SandboxRequest], SandboxResponse]
    faults: bool = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = SandboxRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers=dict(self.headers.items()),
            body=body,
            client=self.client_address[0],
        )
        result = self.server.sandbox._serve(request)
        if result is None:  # drop: the work is done, the answer is lost
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(result.status)
        for k, v in result.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if result.drip is None:
            self.wfile.write(result.body)
            return
        for i in range(len(result.body)):
            self.wfile.write(result.body[i : i + 1])
            self.wfile.flush()
            time.sleep(result.drip)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class _Answering(Protocol):
    """What the HTTP server needs of a :class:`~docrelay.sandbox.Sandbox` (no import of it)."""

    def _serve(self, request: SandboxRequest) -> SandboxResponse | None: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], sandbox: _Answering) -> None:
        self.sandbox = sandbox
        self.tls = False
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed worker, a timeout) is normal here: stay quiet."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)
