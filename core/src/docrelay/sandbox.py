"""Local provider sandboxes: real HTTP servers on 127.0.0.1 with state and fault injection.

A provider plugin subclasses :class:`Sandbox`, declares its routes and keeps the provider's
state (seen ids, ETags, validation progress). The base class gives it:

- a threaded HTTP/1.1 server on a free loopback port (``start()``/``stop()`` or ``with``);
- fault injection from specs (:func:`parse_fault`), applied before or after the business
  logic ran (see :class:`Fault`), switchable at run time over HTTP;
- a record of business effects (``record_effect``), of every request, and of the tokens it
  issued, readable in-process or at ``GET /_sandbox/effects`` and ``/_sandbox/requests``;
- helpers for tokens with a lifetime, sliding-window rate limits and delayed callbacks.

Extension points for subclasses (all public; a plugin sandbox never overrides a private
method nor touches a private attribute of this module's classes):

- :meth:`Sandbox.routes` (the provider's routes), :meth:`Sandbox.reset` (forget state),
  :meth:`Sandbox.error_response` and :meth:`Sandbox.throttle_response` (the provider's 5xx
  and 429 bodies for injected faults);
- :meth:`Sandbox.before_request` (per-request set-up, run first) and
  :meth:`Sandbox.finish_response` (answer post-processing: add headers, rewrite a body);
- :meth:`Sandbox.drop_answer`: the request being handled is processed (or, called from
  :meth:`~Sandbox.before_request`, not even handled) and its answer is never sent, the
  ``drop`` fault aimed at one request;
- :attr:`Sandbox.token_route` (:class:`OAuthTokenRoute`): an OAuth2 client-credentials token
  route issuing tokens from :attr:`Sandbox.tokens`; :meth:`Sandbox.bearer` checks them;
- :attr:`Sandbox.idempotency` (:class:`IdempotencyKeys`) with
  :meth:`Sandbox.duplicate_of` and :meth:`Sandbox.duplicate_response`: the keys seen and the
  provider's answer to a repeated one;
- :attr:`Sandbox.credential_headers`: request headers the request log masks;
- :attr:`Sandbox.lock`, :attr:`Sandbox.random` and :meth:`Sandbox.count_fault` for state,
  dice and fault counters of the subclass's own faults.

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

import hmac
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs

import attrs
import requests

from ._sandbox_http import (
    Fault,
    Route,
    SandboxRequest,
    SandboxResponse,
    _Server,
    parse_fault,
)
from ._sandbox_state import IdempotencyKeys, OAuthTokenRoute, SlidingWindow, TokenIssuer

__all__ = [
    "Fault",
    "IdempotencyKeys",
    "OAuthTokenRoute",
    "Route",
    "Sandbox",
    "SandboxRequest",
    "SandboxResponse",
    "SlidingWindow",
    "TokenIssuer",
    "parse_fault",
]


class Sandbox:
    """Base class of provider sandboxes. Subclasses set :attr:`name` and fill :meth:`routes`.

    :param faults: fault specs or :class:`Fault` objects active from the start.
    :param seed: seed for the fault dice (reproducible runs).
    :param options: provider-specific options (documented by each sandbox).
    """

    name: ClassVar[str] = "sandbox"
    #: Options a subclass understands, with their defaults (``--option KEY=VALUE`` on the CLI).
    options: ClassVar[Mapping[str, Any]] = {}
    #: The provider's credential headers in lower case; the request log masks their values.
    #: A subclass adds its own with ``Sandbox.credential_headers | {"x-secret-header"}``.
    credential_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})
    #: The provider's OAuth2 client-credentials token route, if it has one.
    token_route: ClassVar[OAuthTokenRoute | None] = None

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
        #: The lock of the sandbox's state; a subclass may hold it for its own state too.
        self.lock = threading.RLock()
        #: The seeded dice of the fault injection; a subclass rolls its own faults with it.
        self.random = random.Random(seed)
        #: Tokens issued by :attr:`token_route`, checked by :meth:`bearer`. A test may
        #: replace it with a fresh :class:`TokenIssuer` (the provider forgets every token).
        self.tokens = TokenIssuer(float(self.config.get("token_ttl") or 3600))
        #: Idempotency keys seen (see :meth:`duplicate_of`); cleared by :meth:`reset`.
        self.idempotency = IdempotencyKeys()
        self._faults: list[Fault] = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
        self.effects: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.faults_injected: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self._this_request = threading.local()
        token_routes = []
        if self.token_route is not None:
            path = re.compile("^" + re.escape(self.token_route.path) + "$")
            token_routes.append(Route("POST", path, self.token_response, faults=False))
        self._routes: list[Route] = [
            Route("GET", re.compile(r"^/_sandbox/effects$"), self._get_effects, faults=False),
            Route("GET", re.compile(r"^/_sandbox/requests$"), self._get_requests, faults=False),
            Route("POST", re.compile(r"^/_sandbox/faults$"), self._post_faults, faults=False),
            Route("POST", re.compile(r"^/_sandbox/reset$"), self._post_reset, faults=False),
            *token_routes,
            *self.routes(),
        ]

    # -- for subclasses -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The provider's routes (regex patterns with named groups become ``request.params``)."""
        return []

    def reset(self) -> None:
        """Forget all provider state (subclasses extend this and call ``super().reset()``)."""
        with self.lock:
            self.effects.clear()
            self.requests.clear()
            self.faults_injected.clear()
            self.idempotency.clear()

    def before_request(self, request: SandboxRequest) -> None:
        """Called first for every request, in the thread that answers it (before routing and
        fault injection; the ``/_sandbox`` routes included): set per-request state such as a
        trace id, or call :meth:`drop_answer` to lose the request before it is handled."""

    def finish_response(
        self, request: SandboxRequest, response: SandboxResponse
    ) -> SandboxResponse:
        """Post-process every answer before it is sent (injected faults, 404s and the
        ``/_sandbox`` routes included; not a lost answer): return it with the provider's
        headers added or its body rewritten (``attrs.evolve(response, headers=...)``)."""
        return response

    def drop_answer(self, fault: str = "drop") -> None:
        """Lose the answer of the request being handled: whatever the handler returns, the
        connection is closed without an answer, as the ``drop`` fault does, but aimed at this
        one request (also with concurrent clients). Called from a route handler, the request
        is processed and the answer lost; called from :meth:`before_request`, the request is
        lost before it is handled (and not logged). Counted in ``faults_injected[fault]``."""
        self._this_request.lost = fault

    def count_fault(self, name: str) -> None:
        """Count one fault the subclass injected itself in ``faults_injected[name]``."""
        with self.lock:
            self.faults_injected[name] = self.faults_injected.get(name, 0) + 1

    def record_effect(self, kind: str, key: str, **data: Any) -> None:
        """Record one business effect (a document taken in), to be judged by tests."""
        with self.lock:
            self.effects.append({"kind": kind, "key": key, "at": time.time(), **data})

    def token_ttl(self, default: float) -> float:
        """The token lifetime to hand out: the ``token-ttl`` fault's, else *default*."""
        with self.lock:
            for f in self._faults:
                if f.name == "token-ttl" and f.arg is not None:
                    return float(f.arg)
        return default

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run *fn* in *delay* seconds on a daemon timer (callbacks, async progress)."""
        t = threading.Timer(delay, fn)
        t.daemon = True
        with self.lock:
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

    # -- idempotency ----------------------------------------------------------------------------

    def duplicate_of(self, request: SandboxRequest, key: Hashable) -> SandboxResponse | None:
        """The provider's answer when *key* is in :attr:`idempotency` (see
        :meth:`duplicate_response`), else ``None``. Record a new key with
        ``self.idempotency.remember(key, value)`` once the request is processed; hold
        :attr:`lock` across both when the check and the record must be one step."""
        first = self.idempotency.seen(key)
        if first is None:
            return None
        return self.duplicate_response(request, key, first)

    def duplicate_response(
        self, request: SandboxRequest, key: Hashable, first: Any
    ) -> SandboxResponse:
        """The provider's answer to a repeated idempotency key (default: 409 with the first
        value as ``id``); subclasses return the provider's own shape."""
        return SandboxResponse.json(409, {"message": "already received", "id": first})

    # -- OAuth2 client credentials --------------------------------------------------------------

    def bearer(self, request: SandboxRequest) -> str | None:
        """The client id of the request's valid bearer token (from :attr:`tokens`), else
        ``None``."""
        return self.tokens.bearer(request)

    def token_clients(self) -> Mapping[str, str]:
        """The clients :attr:`token_route` accepts, id -> secret (default: the ``clients``
        option, else the ``client_id`` and ``client_secret`` options)."""
        clients = self.config.get("clients")
        if isinstance(clients, Mapping):
            return {str(k): str(v) for k, v in clients.items()}
        if "client_id" in self.config:
            return {str(self.config["client_id"]): str(self.config.get("client_secret"))}
        return {}

    def token_lifetime(self) -> float:
        """Seconds a new token lives: the ``token-ttl`` fault's, else the ``token_ttl``
        option (3600)."""
        return self.token_ttl(float(self.config.get("token_ttl") or 3600))

    def check_token_request(
        self, fields: Mapping[str, Any], request: SandboxRequest
    ) -> SandboxResponse | None:
        """Provider-specific checks of a token request whose client is valid (scope,
        audience): a refusal, or ``None`` to issue the token."""
        return None

    def token_refusal(self, error: str, request: SandboxRequest) -> SandboxResponse:
        """The refusal of a token request; *error* is ``invalid_request``,
        ``unsupported_grant_type`` or ``invalid_client`` (default: RFC 6749's
        ``{"error": error}``, 401 for ``invalid_client``, else 400)."""
        return SandboxResponse.json(401 if error == "invalid_client" else 400, {"error": error})

    def token_grant(
        self, fields: Mapping[str, Any], token: str, lifetime: float
    ) -> SandboxResponse:
        """The answer that hands out *token* (default: ``access_token``, ``token_type``
        and ``expires_in``, whole seconds as an integer)."""
        expires_in: float = int(lifetime) if float(lifetime).is_integer() else lifetime
        return SandboxResponse.json(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        )

    def token_response(self, request: SandboxRequest) -> SandboxResponse:
        """The handler of :attr:`token_route` (a subclass may wrap it, calling ``super()``)."""
        route = self.token_route or OAuthTokenRoute()
        fields = _token_fields(request, route.body)
        if fields is None:
            return self.token_refusal("invalid_request", request)
        if route.grant_type_required and fields.get("grant_type") != "client_credentials":
            return self.token_refusal("unsupported_grant_type", request)
        client, secret = fields.get("client_id"), fields.get("client_secret")
        expected = self.token_clients().get(client) if isinstance(client, str) else None
        if (
            expected is None
            or not isinstance(secret, str)
            or not hmac.compare_digest(secret.encode(), expected.encode())
        ):
            return self.token_refusal("invalid_client", request)
        refused = self.check_token_request(fields, request)
        if refused is not None:
            return refused
        token, life = self.tokens.issue(str(client), ttl=self.token_lifetime())
        return self.token_grant(fields, token, life)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._server is not None and self._server.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, *, ssl_context: ssl.SSLContext | None = None) -> Self:
        """Serve on a daemon thread; with *ssl_context* (a server context), over HTTPS."""
        self._server = _Server((self.host, self._port), self)
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self._server.tls = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.lock:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------------

    def set_faults(self, specs: Iterable[str | Fault]) -> None:
        parsed = [f if isinstance(f, Fault) else parse_fault(f) for f in specs]
        with self.lock:
            self._faults = parsed

    @property
    def faults(self) -> list[str]:
        with self.lock:
            return [f.spec() for f in self._faults]

    def _roll(self, name: str) -> Fault | None:
        with self.lock:
            for f in self._faults:
                if f.name != name:
                    continue
                if f.count is not None:
                    if f.count > 0:
                        f.count -= 1
                        self.faults_injected[name] = self.faults_injected.get(name, 0) + 1
                        return f
                elif f.rate is not None and self.random.random() < f.rate:
                    self.faults_injected[name] = self.faults_injected.get(name, 0) + 1
                    return f
        return None

    # -- dispatch -------------------------------------------------------------------------------

    def _serve(self, request: SandboxRequest) -> SandboxResponse | None:
        """One request: ``None`` when its answer is lost (the connection is then closed)."""
        self._this_request.lost = None
        self.before_request(request)
        lost: str | None = self._this_request.lost
        if lost is not None:  # lost on the way: never handled, never logged
            self.count_fault(lost)
            return None
        route, params = self._match(request)
        fault: Fault | None = None
        if route is None:
            allowed = any(r.pattern.match(request.path) for r in self._routes)
            resp = SandboxResponse.json(
                405 if allowed else 404,
                {"message": f"no route for {request.method} {request.path}"},
            )
        else:
            request = attrs.evolve(request, params=params)
            resp, fault = self._handle(route, request)
        lost = self._this_request.lost
        if lost is not None:  # the handler processed the request and lost its answer
            self.count_fault(lost)
            self._log(request, resp, fault=lost)
            return None
        if fault is not None and fault.name == "drop":  # the work is done, the answer is lost
            self._log(request, resp, fault="drop")
            return None
        resp = self.finish_response(request, resp)
        if fault is not None and fault.name == "slow":
            time.sleep(float(fault.arg or 2.0))
        elif fault is not None and fault.name == "drip":
            resp = attrs.evolve(resp, drip=float(fault.arg or 1.0))
        self._log(request, resp, fault=fault.name if fault is not None else None)
        return resp

    def _handle(
        self, route: Route, request: SandboxRequest
    ) -> tuple[SandboxResponse, Fault | None]:
        """The route's answer with the faults injected around it."""
        if route.faults:
            f = self._roll("error")
            if f is not None:
                status = int(f.arg) if f.arg else self.random.choice((500, 503))
                return self.error_response(status, request), f
            f = self._roll("throttle")
            if f is not None:
                headers = {} if f.arg in (None, "none") else {"Retry-After": str(f.arg)}
                return self.throttle_response(request, headers), f
        try:
            resp = route.handler(request)
        except Exception as exc:  # noqa: BLE001 - a sandbox bug must answer 500, not hang
            resp = self.error_response(500, request, detail=f"{type(exc).__name__}: {exc}")
        if not route.faults:
            return resp, None
        return resp, self._roll("drop") or self._roll("slow") or self._roll("drip")

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
        masked = {h.lower() for h in self.credential_headers}
        headers = {k: ("***" if k.lower() in masked else v) for k, v in request.headers.items()}
        with self.lock:
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
        with self.lock:
            return SandboxResponse.json(200, {"effects": list(self.effects)})

    def _get_requests(self, request: SandboxRequest) -> SandboxResponse:
        with self.lock:
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


def _token_fields(request: SandboxRequest, body: str) -> dict[str, Any] | None:
    """The fields of a token request (first value of each form field), ``None`` when the
    body is not of the declared kind."""
    if body == "json":
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None
    ctype = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    try:
        form = parse_qs(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return {k: v[0] for k, v in form.items() if v}
