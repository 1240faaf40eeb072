"""A WSGI app for provider webhooks, to mount in an ERP's web framework or serve alone.

``POST /webhooks/<provider>`` (or ``/webhooks/<provider>/<secret>`` when the provider's
``webhook_secret`` is set) hands the body to :meth:`Relay.ingest_notification`.
``GET /healthz`` answers 200.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .exceptions import UnknownProviderError

if TYPE_CHECKING:
    from ._relay import Relay

__all__ = ["MAX_WEBHOOK_BYTES", "make_wsgi_app"]

log = logging.getLogger("docrelay.webhooks")

#: Largest webhook body accepted (bytes); larger ones get 413.
MAX_WEBHOOK_BYTES = 1024 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
}


def _answer(start: StartResponse, status: int, data: Any) -> Iterable[bytes]:
    body = json.dumps(data).encode()
    start(
        f"{status} {_REASONS.get(status, '')}".strip(),
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def make_wsgi_app(relay: Relay, max_body: int = MAX_WEBHOOK_BYTES) -> Callable[..., Any]:
    """The webhook receiver of *relay* as a WSGI application."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        parts = [p for p in (environ.get("PATH_INFO") or "/").split("/") if p]
        if parts == ["healthz"]:
            return _answer(start_response, 200, {"status": "ok"})
        if len(parts) not in (2, 3) or parts[0] != "webhooks":
            return _answer(start_response, 404, {"error": "not found"})
        if method != "POST":
            return _answer(start_response, 405, {"error": "POST only"})
        provider = parts[1]
        try:
            expected = relay.webhook_secret(provider)
        except UnknownProviderError:
            return _answer(start_response, 404, {"error": f"unknown provider {provider}"})
        given = parts[2] if len(parts) == 3 else ""
        if expected is not None and not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("webhook for %s refused: wrong or missing secret", provider)
            return _answer(start_response, 403, {"error": "forbidden"})
        if expected is None and given:
            return _answer(start_response, 404, {"error": "not found"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _answer(start_response, 400, {"error": "bad Content-Length"})
        if length > max_body:
            return _answer(start_response, 413, {"error": f"body over {max_body} bytes"})
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        headers = {
            k[5:].replace("_", "-").title(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = str(environ["CONTENT_TYPE"])
        try:
            result = relay.ingest_notification(provider, body, headers)
        except ValueError as exc:
            return _answer(start_response, 400, {"error": str(exc)[:300]})
        except Exception:
            log.exception("webhook for %s failed", provider)
            return _answer(start_response, 500, {"error": "internal error"})
        return _answer(start_response, 200, result.to_dict())

    return app
