"""Transport errors named for people: urllib3's exceptions as the requests exceptions
``HTTPAdapter.send`` and ``Response.iter_content`` raise, and those as a
:class:`~docrelay.TransportError` (refused, timed out, DNS, TLS, closed) with host:port, whether
the request may have been sent, and a next step. Used by :mod:`docrelay._transport`."""

from __future__ import annotations

import re
import socket
import ssl
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3
from requests.models import PreparedRequest

from ._models import TransportError
from ._redact import redact

__all__ = ["as_requests_error", "body_read_error", "transport_error"]


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


def as_requests_error(exc: Exception, request: PreparedRequest) -> requests.RequestException | None:
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


def body_read_error(exc: Exception) -> requests.RequestException | None:
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
