"""Redaction of every text form a registered secret takes (unit level: the encoders are the
standard library's, the texts are what services and docrelay's own code make of them)."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest
from docrelay._redact import MASK, redact, register_secret, secrets_scope


@pytest.fixture(autouse=True)
def _forget_the_secrets_of_each_test() -> Iterator[None]:
    """These tests register hundreds of odd secrets; later tests in the same worker must not
    pay for them in every redact() call."""
    with secrets_scope():
        yield


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")


def _lower_hex(s: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


def _normalized(s: str) -> str:
    """What the plugins' one-line message helpers make of a text."""
    return " ".join(_CONTROL.sub(" ", s).split())


ENCODERS = {
    "raw": lambda s: s,
    "quote": lambda s: urllib.parse.quote(s, safe=""),
    "quote_lower": lambda s: _lower_hex(urllib.parse.quote(s, safe="")),
    "quote_path": urllib.parse.quote,
    "quote_plus": lambda s: urllib.parse.quote_plus(s, safe=""),
    "quote_plus_lower": lambda s: _lower_hex(urllib.parse.quote_plus(s, safe="")),
    "quote_twice": lambda s: urllib.parse.quote(urllib.parse.quote(s, safe=""), safe=""),
    "urlencode": lambda s: urllib.parse.urlencode({"client_secret": s}),
    "json_ascii": json.dumps,
    "json_utf8": lambda s: json.dumps(s, ensure_ascii=False),
    "json_twice": lambda s: json.dumps(json.dumps(s)),
    "json_in_dict": lambda s: json.dumps({"error": f"bad {s}"}),
    "repr": repr,
    "ascii": ascii,
    "repr_of_list": lambda s: repr([s]),
    "html": html.escape,
    "xml_charref": lambda s: s.encode("ascii", "xmlcharrefreplace").decode(),
    "normalized": _normalized,
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64_url": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "basic_auth": lambda s: "Basic " + base64.b64encode(f"client-1:{s}".encode()).decode(),
    "basic_auth_u2": lambda s: "Basic " + base64.b64encode(f"ab:{s}".encode()).decode(),
    "basic_auth_u3": lambda s: "Basic " + base64.b64encode(f"abc:{s}".encode()).decode(),
    "basic_latin1": lambda s: base64.b64encode(b"me:" + s.encode("latin-1", "ignore")).decode(),
}

SECRETS = [
    "plain-{}",
    'quo"te\\back/slash+plus {} space',
    "new\nline\r\ttab{}",
    "ctrl\x01\x1f\x7f{}end",
    "unicodé-€-{}-😀",
    "&<amp>'{}'%25",
]


def _secret(template: str) -> tuple[str, str]:
    marker = uuid.uuid4().hex[:8]
    return template.format(marker), marker


@pytest.mark.parametrize("template", SECRETS)
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_form_is_masked(template: str, encoder: str) -> None:
    """The secret, written by each encoder and embedded in a sentence, leaves no trace of
    itself (checked in the same encoding) and the sentence around it survives."""
    secret, marker = _secret(template)
    if encoder == "basic_latin1" and secret != secret.encode("latin-1", "ignore").decode("latin-1"):
        pytest.skip("not Latin-1")
    register_secret(secret)
    encoded = ENCODERS[encoder](secret)
    text = f"before {encoded} after"

    out = redact(text)

    assert out.startswith("before "), out
    assert out.endswith(" after"), out
    assert MASK in out
    if not encoder.startswith(("base64", "basic")):
        assert marker not in out, "the random part of the secret is gone"
    for form in ENCODERS.values():
        with contextlib.suppress(UnicodeEncodeError):
            assert form(secret) not in out


def test_unrelated_text_is_untouched() -> None:
    """Registered secrets do not mask ordinary text, escapes or base64 that is not theirs."""
    for template in SECRETS:
        register_secret(_secret(template)[0])
    text = (
        'GET /api/v1/x?a=b%20c&d=e+f {"k": "v\\n\\"q\\""} \\x41 &amp; '
        + base64.b64encode(b"user:some-other-password").decode()
        + " plain words, no secret: 2024-01-01T00:00:00Z"
    )
    assert redact(text) == text


def test_secret_split_by_escaped_control_characters_in_a_traceback() -> None:
    """A token with a newline shows up escaped (``\\n``) in requests' InvalidHeader text."""
    token = f"tok-{uuid.uuid4().hex[:10]}\nrest"
    register_secret(token)
    header = "Bearer " + token
    text = f"Invalid return character or leading space in header: Authorization: {header!r}"

    assert token.split("\n", maxsplit=1)[0][4:] not in redact(text)
    assert "rest" not in redact(text).split("Authorization")[1]


def test_short_secret_of_blanks_does_not_mask_whitespace() -> None:
    """A secret that is mostly whitespace or control characters is matched exactly, never as
    "any run of whitespace"."""
    register_secret("\n\t\n\t\n\tab")
    text = "a b  c\n\td"

    assert redact(text) == text
    assert redact("x \n\t\n\t\n\tab y") == f"x {MASK} y"
