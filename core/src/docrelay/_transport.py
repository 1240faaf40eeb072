"""HTTP transport: one session per thread, bounded bodies, a total deadline per request,
transport errors named.

A read timeout bounds each wait for the next bytes, so an answer that drips one byte a
second never times out. Every request therefore also has a total deadline (connect, headers
and body together): one watchdog thread closes the connection of a request that outlives
it, and the request's outcome is then ``unknown`` (it may have taken effect).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
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
    if isinstance(exc, _NOT_BUILT):
        return TransportError(
            kind="invalid_request",
            message=redact(f"request not sent: {type(exc).__name__}: {exc}")[:500],
            sent=False,
        )

    def named(kind: str, message: str, sent: bool) -> TransportError:
        return TransportError(kind=kind, message=redact(f"{message} [{words}]")[:500], sent=sent)

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


class _HTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _HTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


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


class Transport:
    """Sends one :class:`HttpRequest` for a provider and reads its answer, within
    *deadline* seconds in all."""

    def __init__(self, deadline: float = 60.0) -> None:
        self.deadline = deadline
        self._local = threading.local()

    def session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # One retry engine: urllib3 must not retry on its own (retries would multiply).
            adapter = _Adapter(
                max_retries=Retry(total=0, connect=0, read=False, redirect=0, status=0),
                pool_connections=16,
                pool_maxsize=16,
            )
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.trust_env = False
            self._local.session = s
        return s

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
            and not is_loopback(parts.hostname)
            and not bool(rt.settings.get("allow_insecure_http", False))
        ):
            return None, TransportError(
                kind="invalid_url", message=f"plain http to {parts.hostname} refused", sent=False
            )
        problem = header_problem(dict(request.headers))
        if problem is not None:
            return None, TransportError(kind="invalid_header", message=problem, sent=False)
        started = time.monotonic()
        watch = _Watch(started + self.deadline)
        _current.watch = watch
        _WATCHDOG.add(watch)
        fired = False
        try:
            r = self.session().request(
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
                fired = watch.finish()
                r.close()
        except requests.RequestException as exc:
            fired = watch.finish() or fired
            if fired:
                return None, self._past_deadline(started)
            local = rt.environment == "sandbox" or is_loopback(urlsplit(url).hostname or "")
            return None, transport_error(
                exc, rt.info.name, local, (rt.connect_timeout, rt.read_timeout)
            )
        finally:
            _WATCHDOG.remove(watch)
            _current.watch = None
            if fired or watch.finish():
                self._drop_connections()
        if fired:
            # The body may have ended only because the watchdog closed the connection.
            return None, self._past_deadline(started)
        return (
            HttpResponse(
                status=r.status_code,
                headers=dict(r.headers),
                body=body,
                url=url,
                elapsed=time.monotonic() - started,
                truncated=truncated,
            ),
            None,
        )

    def _drop_connections(self) -> None:
        """A connection the watchdog closed must not be reused: start this thread's pool
        afresh."""
        s: requests.Session | None = getattr(self._local, "session", None)
        self._local.session = None
        if s is not None:
            s.close()

    def _past_deadline(self, started: float) -> TransportError:
        return TransportError(
            kind="read_timeout",
            message=f"no complete answer within the request deadline ({self.deadline:g} s, "
            f"gave up after {time.monotonic() - started:.1f} s); the request may have taken "
            "effect",
            sent=True,
        )
