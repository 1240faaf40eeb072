"""Property: whatever a secret is made of, no encoded form of it leaks anywhere.

Secrets (a client secret and an access token) are drawn from a wide alphabet: ASCII
punctuation, spaces, control characters and non-ASCII text. Per example, over real HTTP on
loopback, against the echo server (tests/echo_server.py), which reflects every request in
every form in its bodies, headers and error messages:

1. ``docrelay send`` (the command line, in process) delivers to eConnect or SieSmart whose
   token endpoint echoes the client credentials in a 400: ``config_error``;
2. the library delivers to eConnect whose token endpoint issues the drawn token and whose
   send endpoint echoes the request (``Authorization: Bearer <token>`` included) in a 400:
   ``rejected`` with one field error per echoed form;
3. exceptions: the token fetch called directly (``OutcomeError``), and a configuration whose
   base URL carries the URL-encoded secret (``ConfigError``);
4. ``docrelay status``, ``status --json``, ``why`` and ``why --json`` on both stores.

Searched, for each of :data:`FORMS` of each secret: the command line's output, every log
record at DEBUG (urllib3 included, tracebacks included), the exception texts, the attempt
records and outcomes, and the bytes of the SQLite files (database, -wal, -shm) while open
and after close.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import string
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from docrelay import Document, OutcomeError, Relay
from docrelay._serve import settle
from docrelay.cli import main
from docrelay.exceptions import ConfigError
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from docrelay._redact import secrets_scope
from test_redaction import SAMPLE, load_echo


@pytest.fixture(autouse=True)
def _forget_the_secrets_of_each_test() -> Iterator[None]:
    """These tests register hundreds of odd secrets; later tests in the same worker must not
    pay for them in every redact() call."""
    with secrets_scope():
        yield


ENGINE = {"max_attempts": 2, "retry_wait_initial": 0.01, "retry_wait_max": 0.02,
          "deferral_initial": 0.01, "inprocess_attempts": 1}  # fmt: skip
EXAMPLES = 30
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")

#: Wide: ASCII punctuation and spaces, control characters (no NUL: environment variables
#: cannot hold it), and any non-ASCII text (no lone surrogates: not encodable).
_CHARS = st.one_of(
    st.sampled_from(string.punctuation + " \t\n\r\x01\x08\x0b\x1b\x1f\x7f\x85\xa0"),
    st.sampled_from(string.ascii_letters + string.digits),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
)
#: Tokens travel in a header: requests sends only Latin-1 there (see the report).
_TOKEN_CHARS = _CHARS.filter(lambda c: ord(c) < 256)


def _solid(s: str) -> int:
    return sum(1 for c in s if not (c.isspace() or not c.isprintable()))


SECRETS = st.text(_CHARS, min_size=6, max_size=20).filter(lambda s: _solid(s) >= 3)
TOKENS = st.text(_TOKEN_CHARS, min_size=6, max_size=20).filter(lambda s: _solid(s) >= 3)


def _forms(secret: str) -> dict[str, str]:
    """Every form searched: the echo server's encodings, the plugins' one-line message
    normalization, and HTTP Basic credentials of the echo's client id."""
    out = dict(load_echo().forms(secret))
    out["normalized"] = " ".join(_CONTROL.sub(" ", secret).split())
    out["normalized_printable"] = " ".join(
        "".join(c if c.isprintable() else " " for c in secret).split()
    )
    for user in ("client-1", "u", "ab"):
        out[f"basic_{user}"] = base64.b64encode(f"{user}:{secret}".encode()).decode()
    with contextlib.suppress(UnicodeEncodeError):
        out["basic_latin1"] = base64.b64encode(b"client-1:" + secret.encode("latin-1")).decode()
    return {k: v for k, v in out.items() if len(v) >= 6}


FORMS = sorted(_forms('x\n"y/z é 😀').keys() | {"basic_latin1"})


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def _store_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def _settings(provider: str, url: str, secret_ref: str) -> dict[str, Any]:
    common = {"base_url": url, "token_url": f"{url}/token", "client_id": "client-1",
              "client_secret": secret_ref}  # fmt: skip
    if provider == "econnect":
        return {**common, "party_id": "NL:KVK:12345678"}
    return {**common, "audience": "aud"}


def _toml(db: Path, provider: str, url: str) -> str:
    lines = [f'[store]\nurl = "sqlite:///{db}"\n', f"[providers.{provider}]"]
    for k, v in _settings(provider, url, "${DR_PROP_SECRET}").items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def _cli(runner: CliRunner, cfg: Path, args: list[str], secret: str) -> str:
    result = runner.invoke(main, ["--config", str(cfg), *args], env={"DR_PROP_SECRET": secret})
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.output


def _one_example(tmp: Path, provider: str, secret: str, token: str) -> dict[str, str | bytes]:
    echo = load_echo()
    texts: dict[str, str | bytes] = {}
    runner = CliRunner()
    # 1. the command line, token endpoint echoing the credentials
    db1 = tmp / "cli.db"
    with echo.EchoServer(status=400) as server:
        cfg = tmp / "docrelay.toml"
        cfg.write_text(_toml(db1, provider, server.url))
        payload = SAMPLE if provider == "econnect" else tmp / "proposal.json"
        if provider == "siesmart":
            from importlib import resources

            payload.write_bytes(
                resources.files("docrelay_siesmart")
                .joinpath("samples", "proposal-excavator.json")
                .read_bytes()
            )
        texts["cli send"] = _cli(
            runner, cfg, ["send", "--provider", provider, str(payload)], secret
        )
        assert "config_error" in texts["cli send"], texts["cli send"]
        assert server.requests, "the token endpoint was asked"
        for args in (["status"], ["status", "--json"], ["why", payload.stem],
                     ["why", "--json", payload.stem]):  # fmt: skip
            texts[f"cli {' '.join(args)}"] = _cli(runner, cfg, args, secret)
        texts["store cli"] = _store_bytes(db1)
    # 2. the library: a token is issued, the delivery is echoed back
    db2 = tmp / "lib.db"
    with echo.EchoServer(status=400, token=token) as server:
        providers = {"econnect": _settings("econnect", server.url, secret)}
        relay = Relay(f"sqlite:///{db2}", engine=ENGINE, providers=providers)
        try:
            doc = Document(id="prop-1", provider="econnect", kind="invoice",
                           payload=SAMPLE.read_bytes(), content_type="application/xml")  # fmt: skip
            relay.submit(doc)
            [status] = settle(relay, ["prop-1"], timeout=20)
            assert status.is_final, status
            texts["status"] = repr(status) + json.dumps(status.to_dict(), default=str)
            texts["history"] = repr(relay.history("prop-1"))
            texts["attempts json"] = json.dumps(
                [a.outcome.to_dict() for a in relay.history("prop-1") if a.outcome], default=str
            )
            texts["store lib (open)"] = _store_bytes(db2)
            # 3. exception texts
            server.token = None
            ctx = relay.engine.context(relay.engine.runtime("econnect"))
            # Another client id: no token cached, so the declared auth fetches one (refused).
            ctx = attrs.evolve(ctx, settings={**ctx.settings, "client_id": "client-2"})
            with pytest.raises(OutcomeError) as exc:
                ctx.auth_headers()
            texts["exception token"] = str(exc.value) + repr(exc.value.outcome)
        finally:
            relay.close()
        texts["store lib"] = _store_bytes(db2)
    with pytest.raises(ConfigError) as cfg_exc:
        Relay(f"sqlite:///{tmp / 'x.db'}", providers={"econnect": {
            **_settings("econnect", "ftp://127.0.0.1", secret),
            "base_url": f"ftp://u:{urllib.parse.quote(secret, safe='')}@127.0.0.1/"
                        f"{urllib.parse.quote(secret)}"}})  # fmt: skip
    texts["exception config"] = str(cfg_exc.value)
    # 4. the command line on the library's store
    cfg2 = tmp / "lib.toml"
    cfg2.write_text(_toml(db2, "econnect", "http://127.0.0.1:9"))
    for args in (["status", "--json"], ["why", "prop-1"], ["why", "--json", "prop-1"]):
        texts[f"cli lib {' '.join(args)}"] = _cli(runner, cfg2, args, secret)
    return texts


_seen: dict[str, int] = {"examples": 0, "searches": 0}


@settings(max_examples=EXAMPLES, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking takes minutes
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])  # fmt: skip
@given(secret=SECRETS, token=TOKENS, provider=st.sampled_from(["econnect", "siesmart"]))
def test_no_form_of_any_secret_leaks(
    secret: str, token: str, provider: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    baseline = " ".join(_BASELINE)
    secret_forms, token_forms = _forms(secret), _forms(token)
    # A form that docrelay prints anyway (a table border, a word) proves nothing.
    assume(not any(f in baseline for f in (*secret_forms.values(), *token_forms.values())))
    assume(secret not in token and token not in secret)
    tmp = tmp_path_factory.mktemp("prop")
    records = _Records()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    try:
        texts = _one_example(tmp, provider, secret, token)
    finally:
        root.removeHandler(records)
        root.setLevel(previous)
    texts["log"] = "\n".join(records.texts)
    assert records.texts, "the log was captured"
    leaks = []
    for who, forms in (("secret", secret_forms), ("token", token_forms)):
        for name, form in forms.items():
            for where, text in texts.items():
                _seen["searches"] += 1
                needle: Any = form.encode() if isinstance(text, bytes) else form
                if needle in text:
                    leaks.append((who, name, where))
    _seen["examples"] += 1

    assert leaks == [], (secret, token, leaks[:10])


_BASELINE: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the same run prints with plain secrets: forms found there are not evidence."""
    tmp = tmp_path_factory.mktemp("baseline")
    plain = f"plain-{uuid.uuid4().hex}"
    for provider in ("econnect", "siesmart"):
        for text in _one_example(tmp / provider if (tmp / provider).mkdir() is None else tmp,
                                 provider, plain, f"tok-{uuid.uuid4().hex}").values():  # fmt: skip
            _BASELINE.append(text if isinstance(text, str) else text.decode("utf-8", "replace"))
    yield
    print(
        f"\nredaction property: {_seen['examples']} examples, {len(FORMS)} forms per secret, "
        f"{_seen['searches']} searches"
    )
