"""TLS tested, not assumed: a local HTTPS server with a certificate from a throwaway CA
(trustme), for deliveries and for the OAuth token fetches of eConnect and SieSmart.

- verification is on by default; a certificate that does not verify is ``config_error``,
  named clearly (host, "did not verify", what to set), and nothing reaches the server;
- ``verify = "path/to/ca.pem"`` works; a missing or unusable path is refused when the
  configuration is read;
- ``verify = false`` works, and only with a :class:`~docrelay.DocrelayWarning`;
- plain http to anything but loopback stays refused;
- a redirect (301/302/307/308) is never followed, on or off the configured host, and is
  ``config_error`` (the document was not taken at that URL).
"""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from docrelay import Document, Relay
from docrelay._models import OutcomeKind
from docrelay._serve import settle
from docrelay.exceptions import ConfigError, DocrelayWarning

sys.path.insert(0, str(Path(__file__).parent))
from test_redaction import SAMPLE, load_echo

ENGINE = {"max_attempts": 2, "retry_wait_initial": 0.01, "retry_wait_max": 0.02,
          "deferral_initial": 0.01, "inprocess_attempts": 1}  # fmt: skip
INSECURE = "ignore::urllib3.exceptions.InsecureRequestWarning"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def https(ca: trustme.CA) -> Iterator[Any]:
    """An HTTPS echo server: tokens on ``/token``, 200 for everything else."""
    echo = load_echo()
    with echo.EchoServer(status=200, token=f"tls-token-{uuid.uuid4().hex}",
                         tls=echo.tls_context(ca)) as server:  # fmt: skip
        yield server


def _settings(name: str, base: str, token_base: str | None = None) -> dict[str, Any]:
    token = f"{token_base or base}/token"
    if name == "econnect":
        return {"base_url": base, "token_url": token, "client_id": "client-1",
                "party_id": "NL:KVK:12345678",
                "client_secret": f"tls-secret-{uuid.uuid4().hex}"}  # fmt: skip
    return {"base_url": base, "token_url": token, "client_id": "client-1",
            "client_secret": f"tls-secret-{uuid.uuid4().hex}", "audience": "aud"}  # fmt: skip


def _document(name: str) -> Document:
    if name == "econnect":
        return Document(id=f"tls-{uuid.uuid4().hex[:8]}", provider="econnect", kind="invoice",
                        payload=SAMPLE.read_bytes(), content_type="application/xml")  # fmt: skip
    from importlib import resources

    payload = (
        resources.files("docrelay_siesmart")
        .joinpath("samples", "proposal-excavator.json")
        .read_bytes()
    )
    return Document(id=f"tls-{uuid.uuid4().hex[:8]}", provider="siesmart", kind="proposal",
                    payload=payload, content_type="application/json")  # fmt: skip


def _deliver(tmp_path: Path, name: str, settings: dict[str, Any]) -> Any:
    doc = _document(name)
    with Relay(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:6]}.db'}",
               providers={name: settings}, engine=ENGINE) as relay:  # fmt: skip
        relay.submit(doc)
        [status] = settle(relay, [doc.id], timeout=20)
        paused = relay.paused()
    return status, paused


@pytest.mark.parametrize("where", ["token", "send"])
@pytest.mark.parametrize("name", ["econnect", "siesmart"])
def test_a_certificate_that_does_not_verify_is_a_named_config_error(
    https: Any, tmp_path: Path, name: str, where: str
) -> None:
    """Verification is on by default, for the token fetch and for the delivery itself."""
    echo = load_echo()
    with echo.EchoServer(status=200, token=f"plain-token-{uuid.uuid4().hex}") as plain:
        # "send": the token comes from a plain loopback server, the delivery goes to HTTPS.
        settings = _settings(name, https.url, plain.url if where == "send" else None)
        status, paused = _deliver(tmp_path, name, settings)
        token_asked = len(plain.requests)
    assert status.state.value == "failed", status
    assert status.outcome.kind == OutcomeKind.CONFIG_ERROR, status.outcome
    message = status.outcome.message or ""
    port = https.url.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in message, message
    assert "did not verify" in message, message
    assert 'verify = "/path/to/ca.pem"' in message, message
    assert name in paused
    assert https.requests == [], "nothing went over the unverified connection"
    assert token_asked == (1 if where == "send" else 0)


@pytest.mark.parametrize("name", ["econnect", "siesmart"])
def test_verify_with_a_ca_bundle_path_works(
    https: Any, ca_pem: str, tmp_path: Path, name: str
) -> None:
    status, _ = _deliver(tmp_path, name, {**_settings(name, https.url), "verify": ca_pem})

    assert status.outcome.kind != OutcomeKind.CONFIG_ERROR, status.outcome
    assert next(r["path"].split("?")[0].rsplit("/", 1)[-1] for r in https.requests) == "token"
    assert len(https.requests) >= 2, "token and delivery both went over verified TLS"


@pytest.mark.filterwarnings(INSECURE)
def test_verify_false_works_only_with_a_warning(https: Any, tmp_path: Path) -> None:
    with pytest.warns(DocrelayWarning, match="verify = false turns TLS certificate"):
        status, _ = _deliver(tmp_path, "econnect",
                             {**_settings("econnect", https.url), "verify": False})  # fmt: skip

    assert status.state.value == "delivered", status
    assert len(https.requests) == 2


@pytest.mark.parametrize("value", ["/nonexistent/ca.pem", "false", 1, ""])
def test_a_bad_verify_setting_is_refused_when_configured(tmp_path: Path, value: Any) -> None:
    """Not at send time as an internal error: when the configuration is read."""
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    for v in (value, str(bad)):
        with pytest.raises(ConfigError, match="verify"):
            Relay(f"sqlite:///{tmp_path / 'v.db'}",
                  providers={"econnect": {**_settings("econnect", "https://127.0.0.1:9"),
                                          "verify": v}})  # fmt: skip


def test_bad_verify_in_the_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import os
    import subprocess

    (tmp_path / "docrelay.toml").write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "c.db"}"\n[providers.econnect]\n'
        'base_url = "https://127.0.0.1:9"\nclient_id = "c"\nparty_id = "p"\n'
        'client_secret = "${EC_SECRET}"\nverify = "/nonexistent/ca.pem"\n'
    )
    env = dict(os.environ, EC_SECRET="cli-secret-123456")
    proc = subprocess.run([str(Path(sys.executable).parent / "docrelay"), "send", "--provider",
                           "econnect", str(SAMPLE)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "existing CA bundle file" in proc.stderr, proc.stderr
    assert (
        not (tmp_path / "c.db").exists() or b"invoice-INV" not in (tmp_path / "c.db").read_bytes()
    )


@pytest.mark.parametrize("setting", ["base_url", "token_url"])
@pytest.mark.parametrize("name", ["econnect", "siesmart"])
def test_plain_http_is_refused_except_to_loopback(tmp_path: Path, name: str, setting: str) -> None:
    for host in ("198.51.100.7", "psb.example", "[2001:db8::1]"):
        settings = _settings(name, "https://127.0.0.1:9")
        settings[setting] = f"http://{host}/x"
        with pytest.raises(ConfigError, match="plain http"):
            Relay(f"sqlite:///{tmp_path / 'h.db'}", providers={name: settings})
    settings = _settings(name, "https://127.0.0.1:9")
    settings[setting] = "http://127.0.0.1:9/x"
    Relay(f"sqlite:///{tmp_path / 'h.db'}", providers={name: settings}).close()


@pytest.fixture
def trap() -> Iterator[tuple[str, socket.socket]]:
    """A listener on another loopback address that records any connection to it."""
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen()
    listener.settimeout(0.2)
    yield f"http://127.0.0.2:{listener.getsockname()[1]}/steal", listener
    listener.close()


@pytest.mark.parametrize("where", ["token", "send"])
@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_redirects_are_never_followed(
    tmp_path: Path, trap: tuple[str, socket.socket], code: int, where: str
) -> None:
    """Off the configured host (to another address) or on it: not followed, one request,
    and the document fails as config_error (not delivered, not retried, not unknown)."""
    echo = load_echo()
    target, listener = trap
    with echo.EchoServer(status=200, token=f"t-{uuid.uuid4().hex}") as good, \
            echo.EchoServer(redirect=(code, target)) as bad:  # fmt: skip
        base, token_base = (good.url, bad.url) if where == "token" else (bad.url, good.url)
        status, paused = _deliver(tmp_path, "econnect", _settings("econnect", base, token_base))
        own = echo.EchoServer(redirect=(code, f"{good.url}/elsewhere"))
        with own:
            s2, _ = _deliver(tmp_path, "econnect",
                             _settings("econnect", own.url if where == "send" else good.url,
                                       own.url if where == "token" else good.url))  # fmt: skip
        asked = len(bad.requests), len(own.requests)
    with pytest.raises(socket.timeout):
        listener.accept()
    assert asked == (1, 1)
    for s in (status, s2):
        assert s.state.value == "failed", s
        assert s.outcome.kind == OutcomeKind.CONFIG_ERROR, s.outcome
        assert str(code) in (s.outcome.message or "") or s.outcome.status == code, s.outcome
    assert "econnect" in paused
