"""HTTP transport: one session per thread, bounded bodies, a total deadline per request,
transport errors named.

A read timeout bounds each wait for the next bytes, so an answer that drips one byte a
second never times out. Every request therefore also has a total deadline (connect, headers
and body together): one watchdog thread closes the connection of a request that outlives
it, and the request's outcome is then ``unknown`` (it may have taken effect).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, check_header_validity, default_headers
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from ._models import MAX_BODY_BYTES, HttpRequest, HttpResponse, TransportError
from ._redact import redact
from ._settings import ProviderRuntime, is_loopback

__all__ = ["Transport"]


#: requests errors raised while the request is built, before any connection: never sent.
_BAD_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
)
_NOT_BUILT = (requests.exceptions.InvalidHeader, requests.exceptions.InvalidJSONError)


def _causes(exc: BaseException) -> list[BaseException]:
    """*exc* and what it wraps (``args``, urllib3's ``reason``, the cause and context)."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 20:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
    return seen


def _where(exc: requests.RequestException) -> str:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.hostname:
            return f"{parts.hostname}:{parts.port or 443}"
    return "the provider's host"


def _tls_message(exc: requests.RequestException) -> str:
    where = _where(exc)
    verify = [e for e in _causes(exc) if isinstance(e, ssl.SSLCertVerificationError)]
    if verify or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        reason = (verify[0].verify_message if verify else None) or "certificate verify failed"
        return (
            f"TLS: the certificate of {where} did not verify ({reason}); if the provider "
            'uses a private CA, set verify = "/path/to/ca.pem" for this provider (verify = '
            "false turns the check off, with a warning)"
        )
    cause = next((e for e in _causes(exc) if isinstance(e, ssl.SSLError)), exc)
    return f"TLS handshake with {where} failed ({type(cause).__name__}: {cause}); check base_url"


def _host_port(exc: requests.RequestException) -> tuple[str, str]:
    """``(host, "host:port")`` of the request *exc* is about."""
    url = getattr(getattr(exc, "request", None), "url", None)
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.hostname:
            port = parts.port or (80 if parts.scheme == "http" else 443)
            return parts.hostname, f"{parts.hostname}:{port}"
    return "", "the provider's host"


def _root_words(exc: BaseException) -> str:
    """The innermost cause's own words (``[Errno 111] Connection refused``), short."""
    causes = _causes(exc)
    for e in reversed(causes):
        if isinstance(e, OSError) and (e.strerror or e.args):
            text = e.strerror or str(e)
            text = re.sub(r"^<[^>]+>: ", "", text)
            return text[:200]
    return type(exc).__name__


def _about_the_answer(exc: BaseException) -> bool:
    """Whether *exc* is urllib3 refusing the answer's headers (``InvalidHeader`` for
    conflicting ``Content-Length`` values), which requests names as it names a request
    header it refuses to send; the request had left."""
    return any(isinstance(e, u3.InvalidHeader) for e in _causes(exc))


def transport_error(
    exc: requests.RequestException,
    provider: str | None = None,
    local: bool = False,
    timeouts: tuple[float, float] | None = None,
) -> TransportError:
    """Name a requests failure for a person: what happened, where (host:port), the next
    step, and the operating system's own words in brackets; and whether the request may
    have been sent.

    *provider* and *local* (a loopback or sandbox address) choose the next step: "is the
    sandbox running? (docrelay sandbox NAME)" for a local address. ``tls`` (a certificate
    that did not verify, a failed handshake) and ``invalid_request`` (requests refused to
    build it: a header with a line break, a malformed URL) are never sent and are
    configuration errors; see :data:`docrelay._builtins.DOCRELAY_TRANSPORT_FAULTS`.
    """
    text = redact(f"{type(exc).__name__}: {exc}")[:500]
    host, where = _host_port(exc)
    words = _root_words(exc)
    connect_t, read_t = timeouts or (None, None)
    if local:
        step = "is the sandbox running?" + (f" (docrelay sandbox {provider})" if provider else "")
    else:
        step = "check base_url, the network and the provider's status page"
    if isinstance(exc, requests.exceptions.SSLError):
        return TransportError(kind="tls", message=redact(_tls_message(exc))[:500], sent=False)
    if isinstance(exc, _BAD_URL):
        return TransportError(kind="invalid_url", message=text, sent=False)
    if isinstance(exc, _NOT_BUILT) and not _about_the_answer(exc):
        return TransportError(
            kind="invalid_request",
            message=redact(f"request not sent: {type(exc).__name__}: {exc}")[:500],
            sent=False,
        )

    def named(kind: str, message: str, sent: bool) -> TransportError:
        return TransportError(kind=kind, message=redact(f"{message} [{words}]")[:500], sent=sent)

    if isinstance(exc, _NOT_BUILT):
        # urllib3 refused the answer's headers (conflicting Content-Length): it was sent.
        return named("other", f"the answer from {where} has malformed headers; the request "
                     "arrived (it is looked up or resent with the same key)", True)  # fmt: skip
    if isinstance(exc, requests.ConnectTimeout):
        after = f" after {connect_t:g} s" if connect_t else ""
        return named("connect_timeout", f"connecting to {where} timed out{after}: {step}", False)
    if isinstance(exc, requests.ReadTimeout):
        after = f" within {read_t:g} s" if read_t else ""
        return named("read_timeout", f"no answer from {where}{after}; the request may have "
                     "arrived (it is looked up or resent with the same key)", True)  # fmt: skip
    if isinstance(exc, requests.ConnectionError):
        chain = repr(exc.args) + repr(exc.__cause__) + repr(exc.__context__)
        causes = _causes(exc)
        if "RemoteDisconnected" not in chain:
            if "NameResolutionError" in chain or any(
                isinstance(e, socket.gaierror) for e in causes
            ):
                return named("connect", f"cannot resolve {host or where} (DNS): check "
                             "base_url and the network", False)  # fmt: skip
            if "Connection refused" in chain or any(
                isinstance(e, ConnectionRefusedError) for e in causes
            ):
                return named("connect", f"connection refused by {where}: {step}", False)
            not_sent = ("NewConnectionError", "Failed to establish",
                        "Max retries exceeded with url")  # fmt: skip
            if any(s in chain for s in not_sent):
                return named("connect", f"cannot connect to {where}: {step}", False)
        return named("disconnected", f"the connection to {where} closed before the answer; "
                     "the request may have arrived (it is looked up or resent with the same "
                     "key)", True)  # fmt: skip
    return TransportError(kind="other", message=text, sent=True)


#: A header name is an RFC 9110 token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Characters a header value must not hold (every control character but HTAB).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_problem(headers: Mapping[str, object]) -> str | None:
    """Why these headers cannot be sent (CR/LF, NUL, other controls, non-latin-1), naming
    the header but never its value; ``None`` when they can."""
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            return f"header name {name!r} is not a valid HTTP token"
        if not isinstance(value, str):
            return f"header {name} has a {type(value).__name__} value, not text"
        if "\r" in value or "\n" in value or "\0" in value:
            return f"header {name} has a value with a line break or NUL: it cannot be sent"
        if _CONTROL.search(value):
            # RFC 9110: no control character but HTAB in a field value (ESC, DEL, VT...).
            return f"header {name} has a value with a control character: it cannot be sent"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"header {name} has a value with characters outside latin-1: it cannot be sent"
    return None


class _Watch:
    """One request in flight: its deadline and, once it has one, its connection."""

    __slots__ = ("conn", "deadline", "done", "fired", "lock", "shadow")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        #: A duplicate of a new connection's socket: during a TLS handshake the connection
        #: has no usable ``sock`` yet (the SSL socket detaches the plain one), so a
        #: handshake that drips would otherwise outlive the deadline.
        self.shadow: socket.socket | None = None
        self.fired = False
        self.done = False
        self.lock = threading.Lock()

    def connected(self, sock: socket.socket) -> None:
        """A new connection for this request: keep a handle that can shut it down."""
        with self.lock:
            if self.done:
                return
            if self.shadow is not None:
                self.shadow.close()
            self.shadow = sock.dup()
            if self.fired:
                with contextlib.suppress(OSError):
                    self.shadow.shutdown(socket.SHUT_RDWR)

    def fire(self) -> None:
        """Past the deadline: close the request's connection (unless it has finished)."""
        with self.lock:
            if self.done:
                return
            self.fired = True
            for sock in (getattr(self.conn, "sock", None), self.shadow):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> bool:
        """The request is over; whether the deadline closed its connection first."""
        with self.lock:
            self.done = True
            if self.shadow is not None:
                self.shadow.close()
                self.shadow = None
            return self.fired


_current = threading.local()


class _WatchedMixin:
    """Tell the watch of this thread's request which connection carries it."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = self  # type: ignore[assignment]
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.connected(sock)
        return sock


class _FinalResponse(http.client.HTTPResponse):
    """http.client's response, skipping every informational answer before the final one:
    http.client skips ``100 Continue`` only, and would take a ``103 Early Hints`` (which a
    CDN or proxy may send) or a ``102 Processing`` for the provider's answer, leaving the
    real one unread. RFC 9110 15.2: a client must parse 1xx answers it did not expect and
    may ignore them. ``101 Switching Protocols`` is final (never asked for here)."""

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if 100 < status < 200 and status != 101:
            return version, 100, reason  # begin() skips its headers and reads the next one
        return version, status, reason


class _HTTPConnection(_WatchedMixin, HTTPConnection):
    response_class = _FinalResponse


class _HTTPSConnection(_WatchedMixin, HTTPSConnection):
    response_class = _FinalResponse


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class _Watchdog:
    """One daemon thread that closes the connections of requests past their deadline."""

    def __init__(self, resolution: float = 0.05) -> None:
        self._resolution = resolution
        self._watches: set[_Watch] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="docrelay-request-deadline", daemon=True
                )
                self._thread.start()

    def remove(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
                now = time.monotonic()
                late = [w for w in self._watches if w.deadline <= now]
                for w in late:
                    self._watches.discard(w)
                soonest = min((w.deadline for w in self._watches), default=now + 1.0)
            for w in late:
                w.fire()
            time.sleep(max(0.001, min(self._resolution, soonest - time.monotonic())))


_WATCHDOG = _Watchdog()


#: One retry engine: urllib3 must not retry on its own (retries would multiply).
_NO_RETRIES = Retry(total=0, connect=0, read=False, redirect=0, status=0)
#: The headers a ``requests.Session`` sends unless the request sets its own (User-Agent,
#: Accept-Encoding, Accept, Connection), keyed by their lower-case names.
_SESSION_HEADERS: dict[str, tuple[str, str]] = {
    str(k).lower(): (str(k), str(v)) for k, v in default_headers().items()
}
#: Hosts (pools) a thread's ``requests`` fallback keeps.
_POOL_SIZE = 16
#: Idle connections each pool of a thread keeps. A worker thread sends one request at a
#: time and releases its connection (``release_conn`` in a ``finally``) before the next, so
#: it never holds two connections of one pool at once: one kept connection gives the same
#: keep-alive reuse as 16, without 16 slots per pool per thread. Pools do not block
#: (``block=False``): a nested use would still get a fresh connection, discarded after.
_PER_POOL = 1
#: :func:`is_loopback` remembered per host (it parses an IP address on every call).
_loopback = functools.lru_cache(maxsize=256)(is_loopback)


class _Target:
    """Where a URL goes, as ``requests`` prepares it: the pool's scheme, host and port, the
    request target (path and query) and the whole URL."""

    __slots__ = ("host", "path", "port", "scheme", "url")

    def __init__(self, scheme: str, host: str, port: int, path: str, url: str) -> None:
        self.scheme, self.host, self.port, self.path, self.url = scheme, host, port, path, url


#: ``(url, params)`` -> its :class:`_Target`, or ``None`` for a URL the direct path leaves to
#: a ``requests.Session`` (another scheme, credentials in the URL, one requests refuses).
_TARGETS: dict[tuple[str, tuple[tuple[str, str], ...]], _Target | None] = {}
_TIMEOUTS: dict[tuple[float, float], Timeout] = {}


def _target(url: str, params: Mapping[str, str]) -> _Target | None:
    """The :class:`_Target` of *url* with *params*, prepared by requests' own code (the same
    quoting, IDNA and parameter encoding), remembered: the answer depends on the two only."""
    key = (url, tuple(params.items()))
    try:
        return _TARGETS[key]
    except KeyError:
        pass
    target: _Target | None = None
    p = PreparedRequest()
    try:
        p.prepare_url(url, dict(params) or None)
    except (requests.RequestException, ValueError):
        pass  # the session path raises it again, named as before
    else:
        full = str(p.url)
        parts = urlsplit(full)
        if parts.scheme in ("http", "https") and "@" not in parts.netloc and parts.hostname:
            try:
                port = parts.port or (80 if parts.scheme == "http" else 443)
            except ValueError:
                port = None
            if port is not None:
                target = _Target(parts.scheme, parts.hostname, port, p.path_url, full)
    if len(_TARGETS) >= 4096:
        _TARGETS.clear()
    _TARGETS[key] = target
    return target


def _timeout(connect: float, read: float) -> Timeout:
    t = _TIMEOUTS.get((connect, read))
    if t is None:
        t = _TIMEOUTS[(connect, read)] = Timeout(connect=connect, read=read)
    return t


def _wire_headers(method: str, request: HttpRequest) -> dict[str, str]:
    """The headers ``requests.Session.request`` would send: the session's defaults, the
    request's own over them (by case-insensitive name, in the session's order), checked with
    requests' own check, and ``Content-Length``."""
    merged = dict(_SESSION_HEADERS)
    for name, value in request.headers.items():
        check_header_validity((name, value))
        merged[name.lower()] = (name, value)
    if request.body:
        merged["content-length"] = ("Content-Length", str(len(request.body)))
    elif method not in ("GET", "HEAD") and "content-length" not in merged:
        merged["content-length"] = ("Content-Length", "0")
    return dict(merged.values())


def _sent_as(method: str, target: _Target, headers: Mapping[str, str]) -> PreparedRequest:
    """A prepared request as requests would have sent it (for the exceptions' ``request``
    and the cookie jar)."""
    p = PreparedRequest()
    p.method, p.url, p.headers = method, target.url, CaseInsensitiveDict(headers)
    return p


def _mapped(exc: Exception, request: PreparedRequest) -> requests.RequestException | None:
    """The requests exception ``HTTPAdapter.send`` raises for urllib3's *exc* (``None``:
    requests lets it through as it is)."""
    if isinstance(exc, (u3.ProtocolError, OSError)):
        return requests.ConnectionError(exc, request=request)
    if isinstance(exc, u3.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(
            reason, u3.NewConnectionError
        ):
            return requests.ConnectTimeout(exc, request=request)
        if isinstance(reason, u3.ResponseError):
            return requests.exceptions.RetryError(exc, request=request)
        if isinstance(reason, u3.ProxyError):
            return requests.exceptions.ProxyError(exc, request=request)
        if isinstance(reason, u3.SSLError):
            return requests.exceptions.SSLError(exc, request=request)
        return requests.ConnectionError(exc, request=request)
    if isinstance(exc, u3.ClosedPoolError):
        return requests.ConnectionError(exc, request=request)
    if isinstance(exc, u3.ProxyError):
        return requests.exceptions.ProxyError(exc)
    if isinstance(exc, u3.SSLError):
        return requests.exceptions.SSLError(exc, request=request)
    if isinstance(exc, u3.ReadTimeoutError):
        return requests.ReadTimeout(exc, request=request)
    if isinstance(exc, u3.InvalidHeader):
        return requests.exceptions.InvalidHeader(exc, request=request)
    return None


def _body_mapped(exc: Exception) -> requests.RequestException | None:
    """The requests exception ``Response.iter_content`` raises while reading a body."""
    if isinstance(exc, u3.ProtocolError):
        return requests.exceptions.ChunkedEncodingError(exc)
    if isinstance(exc, u3.DecodeError):
        return requests.exceptions.ContentDecodingError(exc)
    if isinstance(exc, u3.ReadTimeoutError):
        return requests.ConnectionError(exc)
    if isinstance(exc, u3.SSLError):
        return requests.exceptions.SSLError(exc)
    return None


class _Client:
    """One thread's HTTP client: a urllib3 pool per scheme, host, port and ``verify``, and a
    ``requests.Session`` per provider made only when needed (a URL the direct path leaves to
    it, or once the provider has set a cookie: from then on its session carries its cookies).
    A provider's cookies never reach another provider, even on the same host (a cookie jar
    ignores the port)."""

    __slots__ = ("pools", "sessions")

    def __init__(self) -> None:
        self.pools: dict[tuple[str, str, int, bool | str], HTTPConnectionPool] = {}
        self.sessions: dict[str, requests.Session] = {}

    def pool(self, target: _Target, verify: bool | str) -> HTTPConnectionPool:
        key = (target.scheme, target.host, target.port, verify)
        pool = self.pools.get(key)
        if pool is None:
            # What requests' PoolManager and HTTPAdapter.cert_verify give the pool.
            if target.scheme == "http":
                pool = _HTTPPool(
                    target.host,
                    target.port,
                    maxsize=_PER_POOL,
                    block=False,
                    blocksize=16384,
                )
            else:
                tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"}
                if verify:
                    where = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
                    tls = {"cert_reqs": "CERT_REQUIRED"}
                    tls["ca_cert_dir" if os.path.isdir(where) else "ca_certs"] = where
                pool = _HTTPSPool(
                    target.host, target.port, maxsize=_PER_POOL, block=False, blocksize=16384,
                    **tls,
                )  # fmt: skip
            self.pools[key] = pool
        return pool

    def requests_session(self, provider: str) -> requests.Session:
        s = self.sessions.get(provider)
        if s is None:
            s = self.sessions[provider] = requests.Session()
            adapter = _Adapter(
                max_retries=_NO_RETRIES,
                pool_connections=_POOL_SIZE,
                pool_maxsize=_PER_POOL,
            )
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.trust_env = False
        return s

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


class Transport:
    """Sends one :class:`HttpRequest` for a provider and reads its answer, within
    *deadline* seconds in all.

    The request goes straight to a urllib3 connection pool of this thread, with the bytes
    ``requests.Session.request`` would send (its default headers, URL quoting, no proxy or
    ``.netrc`` from the environment, ``verify`` as requests reads it) and urllib3's errors
    named as requests names them; only a URL requests would refuse or route elsewhere, and
    a provider that sets cookies, go through a ``requests.Session``."""

    def __init__(self, deadline: float = 60.0) -> None:
        self.deadline = deadline
        self._local = threading.local()

    def _client(self) -> _Client:
        c: _Client | None = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = _Client()
        return c

    def session(self, provider: str) -> requests.Session:
        """This thread's ``requests.Session`` for *provider* (the path for URLs the direct
        one leaves, and for a provider that set cookies)."""
        return self._client().requests_session(provider)

    def send(
        self, rt: ProviderRuntime, request: HttpRequest
    ) -> tuple[HttpResponse | None, TransportError | None]:
        url = (
            request.url
            if "://" in request.url
            else rt.base_url.rstrip("/") + "/" + (request.url.lstrip("/"))
        )
        parts = urlsplit(url)
        if parts.hostname not in rt.allowed_hosts:
            return None, TransportError(
                kind="invalid_url",
                message=f"refused to follow {parts.scheme}://{parts.hostname}: not a configured "
                "host of this provider",
                sent=False,
            )
        if (
            parts.scheme == "http"
            and not _loopback(parts.hostname)
            and not bool(rt.settings.get("allow_insecure_http", False))
        ):
            return None, TransportError(
                kind="invalid_url", message=f"plain http to {parts.hostname} refused", sent=False
            )
        problem = header_problem(request.headers)
        if problem is not None:
            return None, TransportError(kind="invalid_header", message=problem, sent=False)
        client = self._client()
        target = _target(url, request.params)
        session = client.sessions.get(rt.info.name)
        if session is not None and session.cookies:
            target = None  # the provider's cookie jar has something for later requests
        started = time.monotonic()
        watch = _Watch(started + self.deadline)
        _current.watch = watch
        _WATCHDOG.add(watch)
        try:
            if target is None:
                status, headers, body, truncated = self._via_session(rt, request, url, watch)
            else:
                status, headers, body, truncated = self._direct(rt, request, target, watch)
        except requests.RequestException as exc:
            if watch.finish():
                return None, self._past_deadline(started)
            local = rt.environment == "sandbox" or _loopback(urlsplit(url).hostname or "")
            return None, transport_error(
                exc, rt.info.name, local, (rt.connect_timeout, rt.read_timeout)
            )
        finally:
            _WATCHDOG.remove(watch)
            _current.watch = None
            if watch.finish():
                self._drop_connections()
        if watch.finish():
            # The body may have ended only because the watchdog closed the connection.
            return None, self._past_deadline(started)
        return (
            HttpResponse(
                status=status,
                headers=headers,
                body=body,
                url=url,
                elapsed=time.monotonic() - started,
                truncated=truncated,
            ),
            None,
        )

    def _direct(
        self, rt: ProviderRuntime, request: HttpRequest, target: _Target, watch: _Watch
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """The request on this thread's urllib3 pool, as ``HTTPAdapter.send`` sends it."""
        method = request.method.upper()
        headers = _wire_headers(method, request)
        if target.scheme == "https" and rt.verify:
            where = DEFAULT_CA_BUNDLE_PATH if rt.verify is True else rt.verify
            if not os.path.exists(where):  # as HTTPAdapter.cert_verify
                raise OSError(
                    f"Could not find a suitable TLS CA certificate bundle, invalid path: {where}"
                )
        pool = self._client().pool(target, rt.verify)
        try:
            resp: BaseHTTPResponse = pool.urlopen(
                method,
                target.path,
                body=request.body or None,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=_NO_RETRIES,
                timeout=_timeout(rt.connect_timeout, rt.read_timeout),
                chunked=False,
            )
        except Exception as exc:
            named = _mapped(exc, _sent_as(method, target, headers))
            if named is None:
                raise
            raise named  # noqa: B904 - the context is urllib3's error, as requests raises it
        consumed = False
        try:
            chunks, size, truncated = [], 0, False
            try:
                for chunk in resp.stream(16384, decode_content=True):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        truncated = True
                        break
                else:
                    consumed = True
            except Exception as exc:
                named = _body_mapped(exc)
                if named is None:
                    raise
                raise named  # noqa: B904 - as Response.iter_content raises it
            body = b"".join(chunks)[:MAX_BODY_BYTES]
        finally:
            # Before the connection goes back to the pool: the watchdog must not close it
            # afterwards, under the next request.
            watch.finish()
            if not consumed:
                resp.close()
            resp.release_conn()
        if "set-cookie" in resp.headers:
            session = self._client().requests_session(rt.info.name)
            extract_cookies_to_jar(session.cookies, _sent_as(method, target, headers), resp)  # type: ignore[no-untyped-call]
        return resp.status, dict(resp.headers), body, truncated

    def _via_session(
        self, rt: ProviderRuntime, request: HttpRequest, url: str, watch: _Watch
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """The request through this thread's ``requests.Session``."""
        r = self.session(rt.info.name).request(
            request.method,
            url,
            data=request.body or None,
            headers=dict(request.headers),
            params=dict(request.params) or None,
            timeout=(rt.connect_timeout, rt.read_timeout),
            allow_redirects=False,
            verify=rt.verify,
            stream=True,
        )
        try:
            chunks, size, truncated = [], 0, False
            for chunk in r.iter_content(16384):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    truncated = True
                    break
            body = b"".join(chunks)[:MAX_BODY_BYTES]
        finally:
            # Before the connection goes back to the pool: the watchdog must not close
            # it afterwards, under the next request.
            watch.finish()
            r.close()
        return r.status_code, dict(r.headers), body, truncated

    def _drop_connections(self) -> None:
        """A connection the watchdog closed must not be reused: start this thread's pools
        (and session) afresh."""
        c: _Client | None = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            c.close()

    def _past_deadline(self, started: float) -> TransportError:
        return TransportError(
            kind="read_timeout",
            message=f"no complete answer within the request deadline ({self.deadline:g} s, "
            f"gave up after {time.monotonic() - started:.1f} s); the request may have taken "
            "effect",
            sent=True,
        )
