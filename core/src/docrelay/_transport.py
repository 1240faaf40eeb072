"""HTTP transport: a urllib3 connection pool per worker thread (a ``requests.Session`` only
where requests would route a URL elsewhere, or for a provider that sets cookies), bounded
bodies, a total deadline per request.

A read timeout bounds each wait for the next bytes, so an answer that drips one byte a
second never times out. Every request therefore also has a total deadline (connect, headers
and body together): one watchdog thread (:mod:`docrelay._deadline`) closes the connection of
a request that outlives it, and the request's outcome is then ``unknown`` (it may have taken
effect). Errors are named for people in :mod:`docrelay._http_errors`.
"""

from __future__ import annotations

import functools
import http.client
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
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

from ._deadline import WATCHDOG, Watch, WatchedMixin, current
from ._http_errors import as_requests_error, body_read_error, transport_error
from ._models import MAX_BODY_BYTES, HttpRequest, HttpResponse, TransportError
from ._settings import ProviderRuntime, is_loopback

__all__ = ["Transport"]


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


class _HTTPConnection(WatchedMixin, HTTPConnection):
    response_class = _FinalResponse


class _HTTPSConnection(WatchedMixin, HTTPSConnection):
    response_class = _FinalResponse


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


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
        watch = Watch(started + self.deadline)
        current.watch = watch
        WATCHDOG.add(watch)
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
            WATCHDOG.remove(watch)
            current.watch = None
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
        self, rt: ProviderRuntime, request: HttpRequest, target: _Target, watch: Watch
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
            named = as_requests_error(exc, _sent_as(method, target, headers))
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
                named = body_read_error(exc)
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
        self, rt: ProviderRuntime, request: HttpRequest, url: str, watch: Watch
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
