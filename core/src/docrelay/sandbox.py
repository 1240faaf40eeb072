"""Local provider sandboxes: real HTTP servers on 127.0.0.1 with state and fault injection.

A provider plugin subclasses :class:`Sandbox`, declares its routes and keeps the provider's
state (seen ids, ETags, validation progress). The base class gives it:

- a threaded HTTP/1.1 server on a free loopback port (``start()``/``stop()`` or ``with``);
- fault injection from specs (:func:`parse_fault`), applied before or after the business
  logic ran (see :class:`Fault`), switchable at run time over HTTP;
- a record of business effects (``record_effect``), of every request, and of the tokens it
  issued, readable in-process or at ``GET /_sandbox/effects`` and ``/_sandbox/requests``;
- helpers for tokens with a lifetime, sliding-window rate limits and delayed callbacks.

Fault specs, as taken by ``docrelay sandbox NAME --fault SPEC``::

    error@0.2          20% of requests answer 500 or 503 before anything is processed
    error*3:500        the next 3 requests answer 500
    throttle@0.02:1    2% answer 429 with Retry-After: 1 (``:none`` for no header)
    drop@0.05          5% are processed, then the connection is closed without an answer
    slow@0.1:2.5       10% are processed, then answered 2.5 s late
    drip*1:1           the next request is processed, then its answer's body is written one
                       byte a second (each byte resets a client's read timeout)
    token-ttl:5        tokens issued from now on expire after 5 s
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import attrs
import requests

__all__ = [
    "Fault",
    "Route",
    "Sandbox",
    "SandboxRequest",
    "SandboxResponse",
    "SlidingWindow",
    "TokenIssuer",
    "parse_fault",
]

_FAULT_RE = re.compile(
    r"^(?P<name>error|throttle|drop|slow|drip|token-ttl)"
    r"(?:@(?P<rate>[0-9.]+)|\*(?P<count>[0-9]+))?(?::(?P<arg>[A-Za-z0-9.]+))?$"
)
FAULT_NAMES = ("error", "throttle", "drop", "slow", "drip", "token-ttl")
#: Request headers whose values the request log masks (credentials, even sandbox ones).
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "providerkey", "x-subscription-key", "subscription-key", "x-api-key"}
)


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


class TokenIssuer:
    """Bearer tokens with a lifetime, as an OAuth2 server hands them out."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.issued = 0

    def issue(self, subject: str, ttl: float | None = None) -> tuple[str, float]:
        life = self.ttl if ttl is None else ttl
        token = "sbx-" + uuid.uuid4().hex
        with self._lock:
            self._tokens[token] = (subject, time.time() + life)
            self.issued += 1
        return token, life

    def subject(self, token: str | None) -> str | None:
        """The subject of a valid, unexpired token, else ``None``."""
        if not token:
            return None
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    def bearer(self, request: SandboxRequest) -> str | None:
        auth = request.header("Authorization") or ""
        if not auth.lower().startswith("bearer "):
            return None
        return self.subject(auth[7:].strip())


class SlidingWindow:
    """At most ``limit`` events per ``per`` seconds for each key."""

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count one event; ``None`` if allowed, else seconds until one is allowed."""
        now = time.monotonic()
        with self._lock:
            q = self._events.setdefault(key, deque())
            while q and q[0] <= now - self.per:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.0, q[0] + self.per - now)
            q.append(now)
            return None


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed worker, a timeout) is normal here: stay quiet."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class Sandbox:
    """Base class of provider sandboxes. Subclasses set :attr:`name` and fill :meth:`routes`.

    :param faults: fault specs or :class:`Fault` objects active from the start.
    :param seed: seed for the fault dice (reproducible runs).
    :param options: provider-specific options (documented by each sandbox).
    """

    name: ClassVar[str] = "sandbox"
    #: Options a subclass understands, with their defaults (``--option KEY=VALUE`` on the CLI).
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Iterable[str | Fault] = (),
        seed: int | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"unknown {self.name} sandbox option(s): {', '.join(sorted(unknown))}")
        self.config: dict[str, Any] = {**self.options, **options}
        self.host = host
        self._port = port
        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._faults: list[Fault] = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
        self.effects: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.faults_injected: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self._routes: list[Route] = [
            Route("GET", re.compile(r"^/_sandbox/effects$"), self._get_effects, faults=False),
            Route("GET", re.compile(r"^/_sandbox/requests$"), self._get_requests, faults=False),
            Route("POST", re.compile(r"^/_sandbox/faults$"), self._post_faults, faults=False),
            Route("POST", re.compile(r"^/_sandbox/reset$"), self._post_reset, faults=False),
            *self.routes(),
        ]

    # -- for subclasses -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The provider's routes (regex patterns with named groups become ``request.params``)."""
        return []

    def reset(self) -> None:
        """Forget all provider state (subclasses extend this and call ``super().reset()``)."""
        with self._lock:
            self.effects.clear()
            self.requests.clear()
            self.faults_injected.clear()

    def record_effect(self, kind: str, key: str, **data: Any) -> None:
        """Record one business effect (a document taken in), to be judged by tests."""
        with self._lock:
            self.effects.append({"kind": kind, "key": key, "at": time.time(), **data})

    def token_ttl(self, default: float) -> float:
        """The token lifetime to hand out: the ``token-ttl`` fault's, else *default*."""
        with self._lock:
            for f in self._faults:
                if f.name == "token-ttl" and f.arg is not None:
                    return float(f.arg)
        return default

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run *fn* in *delay* seconds on a daemon timer (callbacks, async progress)."""
        t = threading.Timer(delay, fn)
        t.daemon = True
        with self._lock:
            self._timers = [x for x in self._timers if x.is_alive()]
            self._timers.append(t)
        t.start()

    def post_json(self, url: str, data: Any, headers: Mapping[str, str] | None = None) -> int:
        """POST a callback; returns the status, or 0 when it could not be delivered."""
        try:
            r = requests.post(url, json=data, headers=dict(headers or {}), timeout=5)
        except requests.RequestException:
            return 0
        return r.status_code

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Sandbox:
        self._server = _Server((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:
            t.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (used by ``docrelay sandbox``)."""
        self._server = _Server((self.host, self._port), self)
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------------

    def set_faults(self, specs: Iterable[str | Fault]) -> None:
        parsed = [f if isinstance(f, Fault) else parse_fault(f) for f in specs]
        with self._lock:
            self._faults = parsed

    @property
    def faults(self) -> list[str]:
        with self._lock:
            return [f.spec() for f in self._faults]

    def _roll(self, name: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.name != name:
                    continue
                if f.count is not None:
                    if f.count > 0:
                        f.count -= 1
                        self.faults_injected[name] = self.faults_injected.get(name, 0) + 1
                        return f
                elif f.rate is not None and self._random.random() < f.rate:
                    self.faults_injected[name] = self.faults_injected.get(name, 0) + 1
                    return f
        return None

    # -- dispatch -------------------------------------------------------------------------------

    def _serve(self, request: SandboxRequest) -> SandboxResponse | None:
        route, params = self._match(request)
        if route is None:
            allowed = any(r.pattern.match(request.path) for r in self._routes)
            resp = SandboxResponse.json(
                405 if allowed else 404,
                {"message": f"no route for {request.method} {request.path}"},
            )
            self._log(request, resp)
            return resp
        request = attrs.evolve(request, params=params)
        if route.faults:
            f = self._roll("error")
            if f is not None:
                status = int(f.arg) if f.arg else self._random.choice((500, 503))
                resp = self.error_response(status, request)
                self._log(request, resp, fault="error")
                return resp
            f = self._roll("throttle")
            if f is not None:
                headers = {} if f.arg in (None, "none") else {"Retry-After": str(f.arg)}
                resp = self.throttle_response(request, headers)
                self._log(request, resp, fault="throttle")
                return resp
        try:
            resp = route.handler(request)
        except Exception as exc:  # noqa: BLE001 - a sandbox bug must answer 500, not hang
            resp = self.error_response(500, request, detail=f"{type(exc).__name__}: {exc}")
        if route.faults:
            if self._roll("drop") is not None:
                self._log(request, resp, fault="drop")
                return None
            f = self._roll("slow")
            if f is not None:
                time.sleep(float(f.arg or 2.0))
                self._log(request, resp, fault="slow")
                return resp
            f = self._roll("drip")
            if f is not None:
                self._log(request, resp, fault="drip")
                return attrs.evolve(resp, drip=float(f.arg or 1.0))
        self._log(request, resp)
        return resp

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        """The provider's 5xx body (subclasses return the provider's own error shape)."""
        return SandboxResponse.json(status, {"message": detail or "Internal server error"})

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        """The provider's 429 body (subclasses return the provider's own error shape)."""
        return SandboxResponse.json(429, {"message": "Too Many Requests"}, headers)

    def _match(self, request: SandboxRequest) -> tuple[Route | None, dict[str, str]]:
        for r in self._routes:
            if r.method != request.method:
                continue
            m = r.pattern.match(request.path)
            if m:
                return r, m.groupdict()
        return None, {}

    def _log(
        self, request: SandboxRequest, resp: SandboxResponse, fault: str | None = None
    ) -> None:
        if request.path.startswith("/_sandbox/"):
            return
        headers = {
            k: ("***" if k.lower() in _CREDENTIAL_HEADERS else v)
            for k, v in request.headers.items()
        }
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": headers,
                    "status": resp.status,
                    "fault": fault,
                    "at": time.time(),
                }
            )

    def _get_effects(self, request: SandboxRequest) -> SandboxResponse:
        with self._lock:
            return SandboxResponse.json(200, {"effects": list(self.effects)})

    def _get_requests(self, request: SandboxRequest) -> SandboxResponse:
        with self._lock:
            return SandboxResponse.json(
                200, {"requests": list(self.requests), "faults": dict(self.faults_injected)}
            )

    def _post_faults(self, request: SandboxRequest) -> SandboxResponse:
        try:
            specs = request.json().get("faults", [])
            self.set_faults(specs)
        except (ValueError, AttributeError) as exc:
            return SandboxResponse.json(400, {"message": str(exc)})
        return SandboxResponse.json(200, {"faults": self.faults})

    def _post_reset(self, request: SandboxRequest) -> SandboxResponse:
        self.reset()
        return SandboxResponse.json(200, {"message": "reset"})
