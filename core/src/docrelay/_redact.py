"""Central redaction: every secret docrelay knows of is scrubbed from text it emits.

Secrets are registered once (settings marked secret, resolved ``${ENV}`` values, tokens);
logs (a filter on the ``docrelay`` logger), stored attempt records, outcomes, exception
messages and command-line output all pass through :func:`redact`. Plugins never redact on
their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "MASK",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "redact_any",
    "redact_outcome",
    "register_secret",
    "register_secrets",
]

MASK = "***"
#: Values shorter than this are not treated as secrets (they would mask ordinary words).
MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_ordered: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Remember *value* as a secret for the life of the process."""
    global _secrets, _ordered
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets = _secrets | {value}
        # Longest first, so a secret containing another is masked whole.
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def register_secrets(values: Iterable[str | None]) -> None:
    for v in values:
        register_secret(v)


def redact(text: str) -> str:
    """*text* with every registered secret replaced by ``***``."""
    for s in _ordered:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_any(value: Any) -> Any:
    """Redact strings inside JSON-like structures."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_any(v) for v in value]
    return value


def redact_outcome(outcome: Any) -> Any:
    """An :class:`~docrelay.Outcome` with its text fields redacted."""
    from ._models import FieldError, Outcome

    assert isinstance(outcome, Outcome)
    if not _ordered:
        return outcome
    return attrs.evolve(
        outcome,
        message=redact(outcome.message) if outcome.message else outcome.message,
        error_url=redact(outcome.error_url) if outcome.error_url else outcome.error_url,
        request_id=redact(outcome.request_id) if outcome.request_id else outcome.request_id,
        trace_id=redact(outcome.trace_id) if outcome.trace_id else outcome.trace_id,
        provider_ref=redact(outcome.provider_ref) if outcome.provider_ref else None,
        provider_status=redact(outcome.provider_status) if outcome.provider_status else None,
        rule=redact(outcome.rule) if outcome.rule else None,
        field_errors=tuple(
            FieldError(
                field=redact(fe.field) if fe.field else fe.field,
                message=redact(fe.message),
                value=redact(fe.value) if fe.value else fe.value,
                severity=fe.severity,
                rule=fe.rule,
            )
            for fe in outcome.field_errors
        ),
    )


def _redact_record(record: logging.LogRecord) -> None:
    if not _ordered:
        return
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        return
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


class RedactingFilter(logging.Filter):
    """A logging filter (for handlers) that redacts the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_installed = False


def install_log_redaction() -> None:
    """Redact every log record created in this process, whatever logger it goes to.

    Wraps the log record factory once (the previous factory is kept and called first), so
    a secret in a plugin's own logger, in urllib3's debug lines or in a traceback is masked
    before any handler sees it.
    """
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
