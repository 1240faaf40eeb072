"""Central redaction: registered secrets are masked in text, structures, outcomes and every
log record of the process (any logger, tracebacks included)."""

from __future__ import annotations

import logging
import uuid

import pytest
from docrelay import FieldError, Outcome
from docrelay._redact import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_any,
    redact_outcome,
    register_secret,
    register_secrets,
)


def _secret(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def test_redact_masks_registered_secrets() -> None:
    """Every occurrence of a registered secret is replaced by the mask."""
    s = _secret()
    register_secret(s)

    assert f"token={MASK}; again {MASK}" == redact(f"token={s}; again {s}")


def test_short_and_empty_values_are_not_secrets() -> None:
    """Values under six characters would mask ordinary words; they are ignored."""
    register_secrets(["abc", "", None, "12345"])

    assert redact("abc 12345") == "abc 12345"


def test_longest_secret_is_masked_whole() -> None:
    """A secret that contains another registered secret is masked as one piece."""
    inner = _secret("inner")
    outer = f"Bearer {inner}-tail"
    register_secret(inner)
    register_secret(outer)

    assert f"x {MASK} y" == redact(f"x {outer} y")


def test_redact_any_and_outcome() -> None:
    """Nested structures and outcome texts are redacted; other values are kept."""
    s = _secret()
    register_secret(s)
    data = {"a": [s, {"b": f"pre {s}"}], "n": 1, "t": (s,)}
    outcome = Outcome(
        kind="rejected", message=f"bad token {s}", error_url=f"https://x.example/?t={s}",
        field_errors=[FieldError(field=f"f{s}", message=s, value=s)], status=400,
    )  # fmt: skip

    assert {"a": [MASK, {"b": f"pre {MASK}"}], "n": 1, "t": [MASK]} == redact_any(data)
    red = redact_outcome(outcome)
    assert s not in repr(red)
    assert (red.status, red.kind.value) == (400, "rejected")


def test_log_records_of_any_logger_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """A plugin's own logger, with the secret in the format arguments or in an exception's
    traceback, never shows the secret to any handler."""
    install_log_redaction()
    s = _secret("logged")
    register_secret(s)
    other = logging.getLogger(f"thirdparty.{uuid.uuid4().hex[:6]}")
    caplog.set_level(logging.DEBUG)

    other.debug("fetched token %s for %r", s, {"secret": s})
    other.warning(f"inline {s}")
    try:
        raise RuntimeError(f"server said: invalid token {s}")
    except RuntimeError:
        other.exception("call failed")
    logging.getLogger("urllib3.connectionpool").debug("GET /?access_token=%s", s)

    assert len(caplog.records) == 4
    assert s not in caplog.text
    assert MASK in caplog.text
    assert "RuntimeError" in caplog.text, "the traceback is kept, only the secret is masked"
    for record in caplog.records:
        assert s not in record.getMessage()
        assert s not in (record.exc_text or "")


def test_redacting_filter_for_handlers() -> None:
    """RedactingFilter masks records created before the secret's registration."""
    s = _secret("late")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", (s,), None)
    register_secret(s)

    assert RedactingFilter().filter(record) is True
    assert f"value {MASK}" == record.getMessage()
