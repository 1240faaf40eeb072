"""A hostile local HTTP(S) server for the secrets and TLS tests.

It echoes what it is sent back in every form a secret can take: the raw request body, each
form field and each header value, URL-encoded (``+`` and ``%20``, upper and lower-case hex),
JSON-escaped (with and without ``ensure_ascii``), ``repr()``/``ascii()`` escaped, HTML
escaped, base64 (standard and URL-safe, and ``base64(client_id:client_secret)`` as an HTTP
Basic credential) and inside a URL path. The echoes go into the JSON error body (``message``,
``error_description``, ``detail``, ``requestId``, ``traceId``, ``helpLink``, one field error
per form) and into response headers (the header-safe forms). It answers:

- ``POST .../token``: ``200`` with :attr:`EchoServer.token` when one is set, else
  :attr:`EchoServer.status` with the echo (an OAuth endpoint that reflects the form body);
- anything else: :attr:`EchoServer.status` with the echo;
- with :attr:`EchoServer.redirect` set (``(code, location)``): that redirect, for every path.

Started on 127.0.0.1 only; :func:`tls_context` wraps it in TLS with a certificate from a
throwaway ``trustme`` CA. The module is loaded by path from the tests.
"""

from __future__ import annotations

import base64
import html
import json
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EchoServer", "forms"]


def forms(text: str) -> dict[str, str]:
    """*text* in every encoding the echo uses, by name (computed with the standard library)."""
    raw = text.encode("utf-8")
    out = {
        "raw": text,
        "quote": urllib.parse.quote(text, safe=""),
        "quote_path": urllib.parse.quote(text),
        "quote_plus": urllib.parse.quote_plus(text, safe=""),
        "json_ascii": json.dumps(text)[1:-1],
        "json_utf8": json.dumps(text, ensure_ascii=False)[1:-1],
        "json_twice": json.dumps(json.dumps(text)[1:-1])[1:-1],
        "repr": repr(text)[1:-1],
        "ascii": ascii(text)[1:-1],
        "html": html.escape(text),
        "base64": base64.b64encode(raw).decode(),
        "base64_url": base64.urlsafe_b64encode(raw).decode(),
    }
    out["quote_lower"] = _lower_hex(out["quote"])
    out["quote_plus_lower"] = _lower_hex(out["quote_plus"])
    return out


def _lower_hex(s: str) -> str:
    parts = s.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def _header_safe(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return all(32 <= ord(c) < 127 for c in value)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        echo: EchoServer = self.server.echo
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        text = body.decode("utf-8", "replace")
        echo.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers),
             "body": body}
        )  # fmt: skip
        if echo.redirect is not None:
            code, location = echo.redirect
            self._send(code, b"", {"Location": location})
            return
        if self.path.rstrip("/").endswith("/token") and echo.token is not None:
            payload = json.dumps({"access_token": echo.token, "expires_in": 3600})
            self._send(200, payload.encode(), {"Content-Type": "application/json"})
            return
        values = [v for _, v in urllib.parse.parse_qsl(text, keep_blank_values=True)]
        ctype = self.headers.get("Content-Type") or ""
        if "json" in ctype:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict):
                values += [str(v) for v in data.values()]
        values += [v for k, v in self.headers.items() if k.lower() not in ("host",)]
        user = dict(urllib.parse.parse_qsl(text)).get("client_id", "user")
        secret = dict(urllib.parse.parse_qsl(text)).get("client_secret")
        if secret is not None:
            values.append(f"{user}:{secret}")
        errors = []
        head: dict[str, str] = {}
        for i, value in enumerate(values):
            for name, form in forms(value).items():
                errors.append({"field": f"echo{i}.{name}", "message": f"got {form} here"})
                if _header_safe(form) and len(head) < 40:
                    head[f"X-Echo-{i}-{name}"] = form
        quoted = urllib.parse.quote(text, safe="")
        said = {
            "error": "invalid_client",
            "error_description": f"bad client credentials in {text}",
            "message": f"invalid request body {text}",
            "detail": repr(text),
            "code": "ECHO",
            "requestId": quoted[:200],
            "traceId": json.dumps(text)[:200],
            "helpLink": f"https://127.0.0.1/errors/{quoted}"[:1000],
            "errors": errors,
        }
        head["X-Request-Id"] = quoted[:200]
        head["Content-Type"] = "application/json"
        self._send(echo.status, json.dumps(said).encode(), head)

    def _send(self, code: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, echo: EchoServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.echo = echo


class EchoServer:
    """The echo server; use as a context manager. ``url`` is its base URL."""

    def __init__(
        self,
        *,
        status: int = 400,
        token: str | None = None,
        redirect: tuple[int, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.status = status
        self.token = token
        self.redirect = redirect
        self.requests: list[dict[str, Any]] = []
        self._server = _Server(self)
        self._scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def tls_context(ca: Any) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for 127.0.0.1 from *ca* (a trustme.CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx
