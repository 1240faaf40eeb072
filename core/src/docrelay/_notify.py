"""Webhook settings and guards: authentication, size limits, a per-source rate limit, the
access log, and the rule that matches a notification to the delivery round it answers.

The rules (docs/reliability.md, "Webhooks and notifications"):

- **Authenticated by default.** A provider's notifications are taken only with its
  ``webhook_secret`` (a path segment ``/webhooks/<provider>/<secret>``, compared in constant
  time). Without one they are refused unless the relay was told so explicitly
  (``Relay(..., insecure_webhooks=True)``, ``docrelay webhooks --insecure`` on loopback).
- **Bounded.** Bodies over ``max_body_bytes`` are refused (413) before they are read; a
  notification that matches no document may be at most ``max_unmatched_body_bytes``, is
  stored truncated to ``stored_unmatched_body_bytes``, and at most
  ``max_unmatched_per_provider`` of them are kept (the oldest are dropped and counted).
  Of a known document's notifications, ``max_settled_per_document`` that are applied or not
  applicable are kept (the oldest not applicable first are dropped and counted).
  Requests are rate-limited per source address (429 with ``Retry-After``). Nothing is
  stored for a request that did not authenticate.
- **Matched to the round.** A provider such as AQI names only the transactionId, which stays
  the same when a document is sent again after ``ERROR_IN_FILE``. A notification belongs to
  the delivery round in progress when it arrives (the document's latest send); the same body
  twice in one round is a duplicate, the same body in a later round is that round's answer.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .exceptions import ConfigError, DocrelayError

__all__ = [
    "SECRET_MARK",
    "SecretPathFilter",
    "SourceRateLimiter",
    "WebhookRefused",
    "WebhookSettings",
    "check_secret",
    "install_secret_path_filter",
    "overdue_reason",
    "safe_path",
]

access_log = logging.getLogger("docrelay.webhooks.access")

#: What the access log and error messages show instead of a secret path segment.
SECRET_MARK: Final = "<secret>"  # noqa: S105 - a placeholder, not a password


class WebhookRefused(DocrelayError):
    """A webhook request that docrelay does not take; ``status`` is the HTTP answer
    (403 forbidden, 413 too large, 503 the provider is not set up for webhooks).

    The message never contains the secret that was given, nor which documents exist.
    """

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class WebhookSettings:
    """Limits of the webhook receiver (the ``[webhooks]`` table of ``docrelay.toml``)."""

    #: Largest body taken at all (bytes); larger ones get 413 before they are read.
    max_body_bytes: int = 64 * 1024
    #: Largest body taken for a notification that matches no document (bytes).
    max_unmatched_body_bytes: int = 8 * 1024
    #: How much of an unmatched notification's body is stored (bytes; the rest is cut).
    stored_unmatched_body_bytes: int = 2 * 1024
    #: Unmatched notifications kept per provider; the oldest are dropped (and counted).
    max_unmatched_per_provider: int = 1000
    #: Settled notifications kept per document (applied, or not applicable); beyond it the
    #: oldest not applicable ones are dropped first, then the oldest applied (and counted).
    #: A notification still waiting to apply is never dropped.
    max_settled_per_document: int = 20
    #: Requests per source address, as burst size and refill window (``"600/60"``).
    rate_limit: str = "600/60"
    #: Source addresses tracked by the rate limiter (the least recently seen are forgotten).
    rate_limit_sources: int = 10_000
    #: For ``docrelay webhooks`` behind a reverse proxy, the proxy's address, whose
    #: ``X-Forwarded-For`` then names the source (waitress ``trusted_proxy``).
    trusted_proxy: str = ""
    #: Whether the receiver answers ``GET /metrics`` (Prometheus). Off by default: the
    #: receiver faces the providers on the internet, and the page tells anyone which
    #: providers this ERP works with, its volumes and failures (``docrelay run
    #: --metrics-port`` serves the page on loopback instead).
    metrics: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> WebhookSettings:
        data = dict(data or {})
        for k in ("host", "port"):  # where `docrelay webhooks` listens: not limits
            data.pop(k, None)
        names = {a.name: a for a in attrs.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError(f"unknown [webhooks] setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for k, v in data.items():
            default = names[k].default
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ConfigError(f"[webhooks] {k} must be true or false, not {v!r}")
            elif isinstance(default, int):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f"[webhooks] {k} must be a positive integer, not {v!r}")
            elif not isinstance(v, str):
                raise ConfigError(f"[webhooks] {k} must be a string, not {v!r}")
            values[k] = v
        settings = cls(**values)
        settings.rate()  # validates
        return settings

    def rate(self) -> tuple[int, float]:
        """The rate limit as ``(requests, seconds)``."""
        try:
            n, per = self.rate_limit.split("/")
            count, seconds = int(n), float(per)
        except ValueError:
            count, seconds = 0, 0.0
        if count < 1 or not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(
                f"[webhooks] rate_limit must look like '600/60', not {self.rate_limit!r}"
            )
        return count, seconds


def check_secret(provider: str, expected: str | None, given: str | None, insecure: bool) -> None:
    """Raise :class:`WebhookRefused` unless *given* matches *expected* (constant time).

    With no secret configured, notifications are refused (503) unless *insecure*.
    """
    if expected is None:
        if insecure:
            return
        raise WebhookRefused(
            f"provider {provider} has no webhook_secret: set one "
            f'(webhook_secret = "${{{provider.upper()}_WEBHOOK_SECRET}}") or opt out '
            "explicitly (Relay(insecure_webhooks=True), docrelay webhooks --insecure)",
            503,
        )
    if not hmac.compare_digest((given or "").encode(), expected.encode()):
        raise WebhookRefused(f"webhook for {provider} refused: wrong or missing secret", 403)


def safe_path(path: str) -> str:
    """*path* for a log line: ``/webhooks/<provider>/<anything>`` shows no secret."""
    parts = path.split("/")
    # ["", "webhooks", provider, secret, ...]
    if len(parts) > 3 and parts[1] == "webhooks":
        return "/".join([*parts[:3], SECRET_MARK])
    if len(parts) > 3:
        return "/".join([*parts[:2], "..."])
    return path[:200]


#: ``/webhooks/<provider>/<secret>`` anywhere in a line, with doubled slashes too (the app
#: takes ``//webhooks//aqi//<secret>``, so its log lines must hide that form as well).
_SECRET_SEGMENT = re.compile(r"(/webhooks/+[^/\s\"'?]*/+)[^/\s\"'?][^\s\"'?]*")


def _hide(text: str) -> str:
    return _SECRET_SEGMENT.sub(lambda m: m.group(1) + SECRET_MARK, text)


class SecretPathFilter(logging.Filter):
    """Rewrite ``/webhooks/<provider>/<secret>`` in any log line (the server's own lines,
    such as waitress's "Exception while serving <path>") to show no secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        hidden = _hide(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        if record.exc_text:
            record.exc_text = _hide(record.exc_text)
        return True


def install_secret_path_filter() -> None:
    """Put :class:`SecretPathFilter` on the loggers of the webhook receiver and its server."""
    for name in ("waitress", "waitress.queue", "docrelay.webhooks", "docrelay.webhooks.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretPathFilter) for f in logger.filters):
            logger.addFilter(SecretPathFilter())


class SourceRateLimiter:
    """A token bucket per source address, in memory (one per WSGI app / process).

    ``take(source)`` returns ``None`` when the request may go on, or the seconds to wait.
    """

    def __init__(
        self, requests: int, seconds: float, max_sources: int = 10_000, clock: Any = None
    ) -> None:
        self.capacity = float(requests)
        self.refill = requests / seconds
        self.max_sources = max_sources
        self.clock = clock or time.monotonic
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, source: str) -> float | None:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(source, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if tokens >= 1.0:
                self._buckets[source] = (tokens - 1.0, now)
                wait = None
            else:
                self._buckets[source] = (tokens, now)
                wait = (1.0 - tokens) / self.refill
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        return wait


#: The waitress body limit of docrelay's own servers. A request larger than this is refused
#: by the server before the app sees it (the app's own limit is usually lower).
MAX_SERVER_BODY: Final = 1024 * 1024


def overdue_reason(timeout: float) -> str:
    """The reason of an ``accepted`` document whose notification is past the deadline."""
    wait = f"{timeout / 3600:g} h" if timeout >= 3600 else f"{timeout:g} s"
    return (
        f"accepted, but no notification within {wait} (notification_timeout): needs "
        "attention: check that the provider reaches `docrelay webhooks` (callback URL and "
        "secret), then ask the provider's support"
    )
