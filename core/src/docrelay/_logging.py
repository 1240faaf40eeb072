"""Quiet by default: docrelay logs nowhere until the embedding application configures logging.

- The ``docrelay`` logger gets a :class:`logging.NullHandler`, so its warnings never reach
  Python's last-resort handler (stderr) in an application without logging configuration.
- stamina logs every scheduled retry at WARNING on its own ``stamina`` logger. The retries of
  docrelay's engine are routine (the engine records each attempt), so they are routed to the
  ``docrelay.retries`` logger at DEBUG instead; retries of the application's own stamina
  calls still go to the hooks it had (stamina's defaults unless it set others).

:func:`configure_logging` is the one switch for an application (and ``docrelay
--log-format``): plain lines or one JSON object per line (:class:`JsonFormatter`), redacted
like every other channel. While the engine works on a document, every log line of that
thread carries the document's id and provider (:func:`bind_document`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Literal

from stamina.instrumentation import RetryDetails, RetryHook, get_on_retry_hooks, set_on_retry_hooks

__all__ = [
    "JsonFormatter",
    "bind_document",
    "configure_logging",
    "install_quiet_logging",
    "unbind_document",
]

log = logging.getLogger("docrelay.retries")
_lock = threading.Lock()
_pending_lock = threading.Lock()
_installed = False


class _RouteEngineRetries:
    """A stamina retry hook: the engine's retries to ``docrelay.retries`` at DEBUG, every
    other retry to the hooks that were active before."""

    def __init__(
        self,
        others: Sequence[RetryHook] = (),
        pending: Callable[[], tuple[RetryHook, ...]] | None = None,
    ) -> None:
        self._others = tuple(others)
        #: Makes the hooks that were active before at the first retry that is not the
        #: engine's, as stamina itself would (its default hooks import prometheus_client).
        self._pending = pending

    @property
    def others(self) -> tuple[RetryHook, ...]:
        if self._pending is not None:
            with _pending_lock:
                if self._pending is not None:
                    self._others, self._pending = self._pending(), None
        return self._others

    def __call__(self, details: RetryDetails) -> None:
        cause = type(details.caused_by)
        if cause.__name__ == "_Again" and cause.__module__.startswith("docrelay."):
            log.debug(
                "retry %d scheduled in %.2f s (%s)",
                details.retry_num,
                details.wait_for,
                details.caused_by,
            )
            return
        for hook in self.others:
            hook(details)


def _pending_hooks() -> Callable[[], tuple[RetryHook, ...]] | None:
    """The hooks stamina has not made yet (it makes them at its first retry), as a function
    that makes them; ``None`` when they are made already or stamina keeps them otherwise
    (they are then read with :func:`get_on_retry_hooks`)."""
    try:
        from stamina._config import CONFIG
        from stamina.instrumentation._hooks import get_default_hooks, init_hooks
    except ImportError:  # pragma: no cover - another stamina layout: read them now
        return None
    raw = getattr(CONFIG, "_on_retry", _MISSING)
    if getattr(CONFIG, "_get_on_retry", None) != getattr(CONFIG, "_init_on_first_retry", _MISSING):
        return None
    if raw is not None and not isinstance(raw, tuple):
        return None
    if raw is not None and any(isinstance(h, _RouteEngineRetries) for h in raw):
        return None

    def make() -> tuple[RetryHook, ...]:
        return tuple(init_hooks(raw if raw is not None else get_default_hooks()))

    return make


_MISSING = object()


def install_quiet_logging() -> None:
    """Install the NullHandler and the retry routing (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        logging.getLogger("docrelay").addHandler(logging.NullHandler())
        # stamina's hooks are made at its first retry, not here: its default hooks import
        # prometheus_client (2.4 MiB), which a run whose only retries are the engine's
        # (routed to docrelay.retries) never needs.
        pending = _pending_hooks()
        if pending is not None:
            set_on_retry_hooks([_RouteEngineRetries(pending=pending)])
        else:
            current = get_on_retry_hooks()
            if not any(isinstance(h, _RouteEngineRetries) for h in current):
                set_on_retry_hooks([_RouteEngineRetries(current)])
        _installed = True


#: (document id, provider) of the document this thread's engine is working on.
_document: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "docrelay_log_document", default=None
)


def bind_document(doc_id: str, provider: str) -> None:
    """Tag this thread's (this context's) log lines with a document, until
    :func:`unbind_document`."""
    _document.set((doc_id, provider))


def unbind_document() -> None:
    _document.set(None)


class _DocumentFilter(logging.Filter):
    """Adds ``document_id`` and ``provider`` to records made while a document is bound (an
    ``extra=`` the caller gave wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _document.get()
        if bound is not None:
            if not hasattr(record, "document_id"):
                record.document_id = bound[0]
            if not hasattr(record, "provider"):
                record.provider = bound[1]
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``document_id`` and ``provider`` where known, ``exception`` with the
    traceback. Every value and the finished line go through :func:`docrelay redaction
    <docrelay._redact.redact>`, so a secret does not appear raw nor JSON-escaped."""

    def format(self, record: logging.LogRecord) -> str:
        from ._redact import redact

        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        data: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for field in ("document_id", "provider"):
            value = getattr(record, field, None)
            if value is not None:
                data[field] = redact(str(value))
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            data["stack"] = redact(self.formatStack(record.stack_info))
        return redact(json.dumps(data, ensure_ascii=True))


_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
_handler: logging.Handler | None = None


def configure_logging(
    level: int | str = logging.WARNING,
    format: Literal["text", "json"] = "text",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send docrelay's logs (and every other logger's, through the root logger) to *stream*
    (stderr by default) as ``text`` lines or one ``json`` object per line, redacted.

    Calling it again replaces the handler it installed before. Returns the handler.
    """
    from ._redact import install_log_redaction

    global _handler
    if format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {format!r}")
    install_log_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(_DocumentFilter())
    root = logging.getLogger()
    with _lock:
        if _handler is not None:
            root.removeHandler(_handler)
        root.addHandler(handler)
        _handler = handler
    root.setLevel(level)
    return handler
