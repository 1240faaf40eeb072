"""HTTP transport: one session per thread, bounded bodies, transport errors named."""

from __future__ import annotations

import ssl
import threading
import time
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
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


def transport_error(exc: requests.RequestException) -> TransportError:
    """Name a requests failure: what happened, and whether the request may have been sent.

    ``tls`` (a certificate that did not verify, a failed handshake) and ``invalid_request``
    (requests refused to build it: a header with a line break, a malformed URL) are never
    sent and are configuration errors; see :data:`docrelay._builtins.DOCRELAY_TRANSPORT_FAULTS`.
    """
    text = redact(f"{type(exc).__name__}: {exc}")[:500]
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
    if isinstance(exc, requests.ConnectTimeout):
        return TransportError(kind="connect_timeout", message=text, sent=False)
    if isinstance(exc, requests.ReadTimeout):
        return TransportError(kind="read_timeout", message=text, sent=True)
    if isinstance(exc, requests.ConnectionError):
        chain = repr(exc.args) + repr(exc.__cause__) + repr(exc.__context__)
        not_sent = (
            "NewConnectionError",
            "Connection refused",
            "NameResolutionError",
            "Failed to establish",
            "Max retries exceeded with url",
        )
        if any(s in chain for s in not_sent) and "RemoteDisconnected" not in chain:
            return TransportError(kind="connect", message=text, sent=False)
        return TransportError(kind="disconnected", message=text, sent=True)
    return TransportError(kind="other", message=text, sent=True)


class Transport:
    """Sends one :class:`HttpRequest` for a provider and reads its answer."""

    def __init__(self) -> None:
        self._local = threading.local()

    def session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # One retry engine: urllib3 must not retry on its own (retries would multiply).
            adapter = HTTPAdapter(
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
        started = time.monotonic()
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
        except requests.RequestException as exc:
            return None, transport_error(exc)
        try:
            chunks, size, truncated = [], 0, False
            for chunk in r.iter_content(16384):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    truncated = True
                    break
            body = b"".join(chunks)[:MAX_BODY_BYTES]
        except requests.RequestException as exc:
            return None, transport_error(exc)
        finally:
            r.close()
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
