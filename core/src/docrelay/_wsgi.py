"""A WSGI app for provider webhooks, to mount in an ERP's web framework or serve alone.

``POST /webhooks/<provider>/<secret>`` hands the body to :meth:`Relay.ingest_notification`
(the secret is the provider's ``webhook_secret``; ``/webhooks/<provider>`` alone only with an
explicitly insecure relay). ``GET /healthz`` answers 200; ``GET /metrics`` the Prometheus page
(docs/observability.md) only when asked for (``[webhooks] metrics = true`` or
``make_wsgi_app(relay, metrics=True)``): the receiver faces the internet. Requests are
parsed by werkzeug (``Content-Length`` or chunked bodies, limited to ``max_body`` bytes),
rate-limited per source address, and logged by docrelay's own access log
(``docrelay.webhooks.access``), which never shows the secret path segment. Every answer is
JSON with a one-line ``error`` when refused.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request

from ._notify import SourceRateLimiter, WebhookRefused, access_log, safe_path
from ._redact import redact
from .exceptions import ConfigError, UnknownProviderError


class Relay(Protocol):
    """What the receiver needs of a :class:`docrelay.Relay` (no import of it: no cycle)."""

    webhook_settings: Any

    def queue_depth(self) -> dict[str, dict[str, int]]: ...

    def paused(self) -> dict[str, tuple[str, float | None]]: ...

    def check_webhook(self, provider: str, secret: str | None) -> None: ...

    def ingest_notification(
        self,
        provider: str,
        body: bytes,
        headers: Any = None,
        *,
        secret: str | None = None,
    ) -> Any: ...


__all__ = ["MAX_WEBHOOK_BYTES", "make_wsgi_app"]

log = logging.getLogger("docrelay.webhooks")

#: Largest webhook body accepted by default (bytes); larger ones get 413.
MAX_WEBHOOK_BYTES = 64 * 1024

StartResponse = Callable[..., Any]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

#: Content types taken (a missing one is taken too: not every provider sends it).
_JSON_TYPES = ("application/json", "text/json", "text/plain")


def _is_json_type(mimetype: str) -> bool:
    return not mimetype or mimetype in _JSON_TYPES or mimetype.endswith("+json")


def make_wsgi_app(
    relay: Relay, max_body: int = MAX_WEBHOOK_BYTES, metrics: bool | None = None
) -> Callable[..., Any]:
    """The webhook receiver of *relay* as a WSGI application, with ``GET /metrics`` for
    Prometheus when *metrics* is true (``None``: the relay's ``[webhooks] metrics``, off by
    default; without it the path answers 404 like any other)."""
    if metrics is None:
        metrics = bool(getattr(relay.webhook_settings, "metrics", False))
    count, seconds = relay.webhook_settings.rate()
    limiter = SourceRateLimiter(count, seconds, relay.webhook_settings.rate_limit_sources)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = max_body
        extra: list[tuple[str, str]] = []
        if metrics and request.path == "/metrics" and request.method in ("GET", "HEAD"):
            # Prometheus: the queue depth from the store and the default registry (_metrics).
            # Each scrape reads the store: a source that floods the page gets 429 as one
            # that floods /webhooks does (a Prometheus scraping every 15 s never does).
            from ._metrics import CONTENT_TYPE, metrics_page

            wait = limiter.take(request.remote_addr or "-")
            if wait is None:
                status, body, ctype = 200, metrics_page(relay), CONTENT_TYPE
            else:
                status, ctype = 429, "application/json"
                body = json.dumps({"error": "too many requests"}).encode()
                extra = [("Retry-After", str(max(1, math.ceil(wait))))]
        else:
            status, data, extra = _handle(relay, request, limiter)
            body, ctype = json.dumps(data).encode(), "application/json"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        headers += extra
        start_response(f"{status} {_REASONS.get(status, '')}".strip(), headers)
        access_log.info(
            '%s "%s %s" %d %d',
            request.remote_addr or "-",
            request.method,
            safe_path(request.path),
            status,
            len(body),
        )
        return [body]

    return app


def _handle(
    relay: Relay, request: Request, limiter: SourceRateLimiter
) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    parts = [p for p in request.path.split("/") if p]
    if parts == ["healthz"]:
        return 200, {"status": "ok"}, []
    if len(parts) not in (2, 3) or parts[0] != "webhooks":
        return 404, {"error": "not found"}, []
    wait = limiter.take(request.remote_addr or "-")
    if wait is not None:
        retry = max(1, math.ceil(wait))
        return 429, {"error": "too many requests"}, [("Retry-After", str(retry))]
    if request.method != "POST":
        return 405, {"error": "POST only"}, [("Allow", "POST")]
    provider = parts[1]
    given = parts[2] if len(parts) == 3 else None
    try:
        relay.check_webhook(provider, given)
    except UnknownProviderError:
        return 404, {"error": "not found"}, []
    except ConfigError as exc:
        log.warning("webhook for %s refused: the provider is not configured (%s)", provider,
                    _line(exc))  # fmt: skip
        return 503, {"error": f"provider {provider} is not configured"}, []
    except WebhookRefused as exc:
        log.warning("%s", exc)
        if exc.status == 503:
            return 503, {"error": f"webhooks for {provider} are not set up"}, []
        return 403, {"error": "forbidden"}, []
    if not _is_json_type(request.mimetype):
        return 415, {"error": f"not a JSON notification ({request.mimetype})"}, []
    if request.content_length is not None and request.content_length > (
        request.max_content_length or 0
    ):
        return 413, {"error": f"body over {request.max_content_length} bytes"}, []
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return 413, {"error": f"body over {request.max_content_length} bytes"}, []
    except ClientDisconnected:
        return 400, {"error": "incomplete body"}, []
    headers = {k: v for k, v in request.headers.items()}
    try:
        result = relay.ingest_notification(provider, body, headers, secret=given)
    except WebhookRefused as exc:
        return exc.status, {"error": _line(exc)}, []
    except ValueError as exc:
        return 400, {"error": _line(exc)}, []
    except ConfigError as exc:
        log.warning("webhook for %s refused: %s", provider, _line(exc))
        return 503, {"error": f"provider {provider} is not configured"}, []
    except Exception:
        log.exception("webhook for %s failed", provider)
        return 500, {"error": "internal error"}, []
    return 200, result.to_dict(), []


def _line(exc: BaseException) -> str:
    return redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
