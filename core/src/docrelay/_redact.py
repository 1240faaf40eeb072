"""Central redaction: every secret docrelay knows of is scrubbed from text it emits.

Secrets are registered once (settings marked secret, resolved ``${ENV}`` values, tokens);
logs (a filter on the ``docrelay`` logger), stored attempt records, outcomes, exception
messages and command-line output all pass through :func:`redact`. Plugins never redact on
their own.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator
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
#: Base64 fragments shorter than this are not searched (they would match ordinary words).
_MIN_B64_CORE = 6
#: An escape's backslash, once or doubled by a second round of escaping (bounded: no
#: runaway backtracking on a text made of backslashes).
_ESC = r"\\{1,8}"
_NAMED_ESCAPES = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f", "\v": "v",
                  "\a": "a", "\0": "0"}  # fmt: skip
_HTML_NAMES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "(?:apos|#39)"}
_ANCHOR = re.compile(r"[A-Za-z0-9]+")


@attrs.frozen
class _Secret:
    """One registered secret, compiled: the pattern matching every text form it takes, the
    literal every such form contains (``None``: none, always search), its base64 cores."""

    length: int
    anchor: str | None
    pattern: re.Pattern[str]
    b64: tuple[str, ...]


_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_compiled: tuple[_Secret, ...] = ()
_b64_cores: tuple[str, ...] = ()


def _hex(n: int, width: int) -> str:
    """*n* as *width* hex digits, matching upper and lower case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{n:0{width}x}")


def _alternatives(c: str) -> list[str]:
    """Regex fragments for every way one character of a secret is written."""
    if c.isascii() and c.isalnum():
        return [c]
    cp = ord(c)
    alts = [_ESC] if c == "\\" else [re.escape(c)]
    if c in "\"'/":
        alts.append(_ESC + re.escape(c))  # \" \' \/ (JSON, repr, JavaScript)
    if c in _NAMED_ESCAPES:
        alts.append(_ESC + _NAMED_ESCAPES[c])  # \n \r \t ...
    if cp < 0x100:
        alts.append(_ESC + "x" + _hex(cp, 2))  # repr(), ascii()
    if cp < 0x10000:
        alts.append(_ESC + "u" + _hex(cp, 4))  # JSON ensure_ascii, repr of non-printables
    else:
        hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        alts.append(_ESC + "u" + _hex(hi, 4) + _ESC + "u" + _hex(lo, 4))  # JSON surrogates
    alts.append(_ESC + "U" + _hex(cp, 8))
    # URL encoding (any safe set), UTF-8 and Latin-1 bytes, optionally encoded twice (%25).
    alts.append("".join("%(?:25)?" + _hex(b, 2) for b in c.encode("utf-8")))
    if 0x80 <= cp < 0x100:
        alts.append("%(?:25)?" + _hex(cp, 2))
    if c == " ":
        alts.append(r"\+")  # application/x-www-form-urlencoded
    # HTML and XML character references.
    if c in _HTML_NAMES:
        alts.append(f"&{_HTML_NAMES[c]};")
    alts.append(f"&#0*{cp};")
    alts.append(f"&#[xX]0*{_hex(cp, len(f'{cp:x}'))};")
    return alts


def _blank(c: str) -> bool:
    """Whitespace or unprintable: what normalizers collapse to a space or drop."""
    return c.isspace() or not c.isprintable()


def _group(alts: list[str]) -> str:
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def _pattern(secret: str) -> str:
    """A regex for *secret* in any text form: each character raw or escaped in any of the
    ways of :func:`_alternatives` (mixed freely), and, when the secret has enough printable
    content, each run of whitespace or control characters also collapsed to whitespace or
    dropped (what ``" ".join(text.split())`` and friends make of it)."""
    runs = [(blank, "".join(chars)) for blank, chars in itertools.groupby(secret, _blank)]
    general = sum(len(chunk) for blank, chunk in runs if not blank) >= 3
    parts = []
    for blank, chunk in runs:
        if not blank or not general:
            parts.append("".join(_group(_alternatives(c)) for c in chunk))
            continue
        alts = list(dict.fromkeys(a for c in chunk for a in _alternatives(c)))
        parts.append("(?:" + "|".join([r"\s", *alts]) + ")*")
    return "".join(parts)


def _base64_cores(secret: str) -> tuple[str, ...]:
    """The base64 text every encoding of a byte string containing *secret* contains.

    Whatever precedes the secret (``user:`` of an HTTP Basic credential, any prefix), its
    bytes start at offset 0, 1 or 2 of a 3-byte group; for each alignment the characters
    that encode only secret bits are fixed. Standard and URL-safe alphabets, UTF-8 and (as
    ``requests`` encodes Basic credentials) Latin-1 bytes.
    """
    encodings = [secret.encode("utf-8")]
    try:
        latin = secret.encode("latin-1")
    except UnicodeEncodeError:
        latin = encodings[0]
    if latin != encodings[0]:
        encodings.append(latin)
    cores: set[str] = set()
    for data in encodings:
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + data).decode("ascii")
            core = encoded[-(-8 * shift // 6) : (8 * (shift + len(data))) // 6]
            if len(core) >= _MIN_B64_CORE:
                cores.update((core, core.translate(_URLSAFE)))
    return tuple(sorted(cores, key=len, reverse=True))


_URLSAFE = str.maketrans("+/", "-_")


def _compile(secret: str) -> _Secret:
    anchors = _ANCHOR.findall(secret)
    return _Secret(
        length=len(secret),
        anchor=max(anchors, key=len) if anchors else None,
        pattern=re.compile(_pattern(secret)),
        b64=_base64_cores(secret),
    )


def register_secret(value: str | None) -> None:
    """Remember *value* as a secret for the life of the process.

    The variants it is masked in (URL, JSON, ``repr``, HTML escapes, whitespace collapsed,
    base64) are compiled here, once, so that :func:`redact` stays a few literal searches.
    """
    if not isinstance(value, str):
        return
    # A provider may echo it normalised (NFD from Java or macOS, NFKC): each form is masked.
    forms = (value, *(unicodedata.normalize(f, value) for f in ("NFC", "NFD", "NFKC", "NFKD")))
    for form in dict.fromkeys(forms):
        _register_form(form)


def _register_form(value: str) -> None:
    global _secrets, _compiled, _b64_cores
    if len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    entry = _compile(value)
    with _lock:
        if value in _secrets:
            return
        _secrets = _secrets | {value}
        # Longest first, so a secret containing another is masked whole.
        _compiled = tuple(sorted((*_compiled, entry), key=lambda s: s.length, reverse=True))
        _b64_cores = tuple(dict.fromkeys(c for s in _compiled for c in s.b64))


@contextlib.contextmanager
def secrets_scope() -> Iterator[None]:
    """Forget, on leaving, the secrets registered inside (tests that register many: the
    registry lives as long as the process, and every :func:`redact` looks at each one)."""
    global _secrets, _compiled, _b64_cores
    with _lock:
        saved = (_secrets, _compiled, _b64_cores)
    try:
        yield
    finally:
        with _lock:
            _secrets, _compiled, _b64_cores = saved


def register_secrets(values: Iterable[str | None]) -> None:
    for v in values:
        register_secret(v)


def _mask_base64(text: str, core: str) -> str:
    """*text* with every base64 word containing *core* replaced by the mask (whole, with
    its padding: the bits around the core belong to the secret too)."""
    i = text.find(core)
    while i >= 0:
        start, end = i, i + len(core)
        while start > 0 and text[start - 1] in _B64_WORD:
            start -= 1
        while end < len(text) and text[end] in _B64_WORD:
            end += 1
        pad = end
        while pad < len(text) and pad < end + 2 and text[pad] == "=":
            pad += 1
        text = text[:start] + MASK + text[pad:]
        i = text.find(core, start + len(MASK))
    return text


_B64_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


def redact(text: str) -> str:
    """*text* with every registered secret, in every form it takes, replaced by ``***``.

    Forms: raw; URL-encoded (``%XX`` in either case, ``+`` for space, any safe set, twice
    encoded); JSON, ``repr()`` and ``ascii()`` escapes (``\\"``, ``\\\\``, ``\\n``,
    ``\\xXX``, ``\\uXXXX``, surrogate pairs, doubly escaped); HTML character references;
    runs of whitespace or control characters collapsed or dropped; base64 (standard or
    URL-safe) of any text containing it, such as an HTTP Basic credential. Letters and
    digits are expected as themselves (no encoder escapes them).
    """
    compiled = _compiled
    if not compiled or not text:
        return text
    for s in compiled:
        if s.anchor is None or s.anchor in text:
            text = s.pattern.sub(MASK, text)
    for core in _b64_cores:
        if core in text:
            text = _mask_base64(text, core)
    return text


def redact_any(value: Any) -> Any:
    """Redact strings inside JSON-like structures."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_any(v) for v in value]
    return value


def redact_outcome(outcome: Any) -> Any:
    """An :class:`~docrelay.Outcome` with its text fields redacted."""
    from ._models import FieldError, Outcome

    assert isinstance(outcome, Outcome)
    if not _compiled:
        return outcome
    texts = [
        outcome.message,
        outcome.error_url,
        outcome.request_id,
        outcome.trace_id,
        outcome.provider_ref,
        outcome.provider_status,
        outcome.rule,
    ]
    for fe in outcome.field_errors:
        texts.extend((fe.field, fe.message, fe.value))
    falsy_none = all(
        v is None or v for v in (outcome.provider_ref, outcome.provider_status, outcome.rule)
    )
    if falsy_none and all(not t or redact(t) == t for t in texts):
        return outcome  # nothing to mask: no copy (the hot path redacts each outcome often)
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
    if not _compiled:
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
