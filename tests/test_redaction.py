"""Secrets in every form they take, over real HTTP: the echo server (tests/echo_server.py)
reflects the request back URL-encoded, JSON- and repr-escaped, HTML-escaped and in base64,
and nothing of it reaches the command line's output, the log, the attempt records or the
store's bytes."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from docrelay import Relay
from docrelay._serve import settle

HERE = Path(__file__).parent
DOCRELAY = Path(sys.executable).parent / "docrelay"
SAMPLE = HERE.parent / "plugins/econnect/src/docrelay_econnect/samples/invoice-INV-2024-0101.xml"
ENGINE = {"max_attempts": 2, "retry_wait_initial": 0.01, "retry_wait_max": 0.02,
          "deferral_initial": 0.01, "inprocess_attempts": 1}  # fmt: skip


def load_echo() -> ModuleType:
    name = "docrelay_test_echo_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "echo_server.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def leaks(secret: str, texts: dict[str, str | bytes]) -> list[tuple[str, str]]:
    """(where, form) for every encoded form of *secret* found in *texts*."""
    found = []
    for form_name, form in load_echo().forms(secret).items():
        if len(form) < 6:
            continue
        for where, text in texts.items():
            needle: str | bytes = form.encode() if isinstance(text, bytes) else form
            if needle in text:  # type: ignore[operator]
                found.append((where, form_name))
    return found


def store_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def test_token_endpoint_echoing_the_form_body_leaks_nothing(tmp_path: Path) -> None:
    """The issue: an eConnect token endpoint that echoes the form body in its 400 error.
    ``send``, ``status`` and ``why`` (table and JSON) in fresh processes that know the secret
    only through a ``${ENV}`` reference, and the store's database and WAL files."""
    echo = load_echo()
    secret = f'ec sec"ret/{uuid.uuid4().hex[:10]}+ü\\x'
    db = tmp_path / "issue.db"
    with echo.EchoServer(status=400) as server:
        (tmp_path / "docrelay.toml").write_text(
            f'[store]\nurl = "sqlite:///{db}"\n\n[providers.econnect]\n'
            f'base_url = "{server.url}"\ntoken_url = "{server.url}/token"\n'
            'client_id = "client-1"\nparty_id = "NL:KVK:12345678"\n'
            'client_secret = "${EC_CLIENT_SECRET}"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
        env["EC_CLIENT_SECRET"] = secret
        outputs = {}
        for args in (["send", "--provider", "econnect", str(SAMPLE)], ["status"],
                     ["status", "--json"], ["why", SAMPLE.stem],
                     ["why", "--json", SAMPLE.stem]):  # fmt: skip
            proc = subprocess.run([str(DOCRELAY), *args], cwd=tmp_path, env=env, text=True,
                                  capture_output=True, timeout=60, check=False)  # fmt: skip
            assert "Traceback" not in proc.stderr, proc.stderr
            outputs[" ".join(args)] = proc.stdout + proc.stderr
        assert server.requests, "the token endpoint was asked"
        assert "client_secret=" in server.requests[0]["body"].decode()
    assert "config_error" in outputs["status --json"], outputs["status --json"]
    assert "refused the client credentials" in outputs["status"]
    found = leaks(secret, {**outputs, "store": store_bytes(db)})

    assert found == []


def test_token_with_a_newline_is_masked_in_its_escaped_form(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token endpoint issues a token containing a newline. requests refuses to send it in a
    header and names it ``repr()``-escaped; the escaped form is masked too, in the log, the
    outcome, the attempt records and the store."""
    caplog.set_level(logging.DEBUG)
    echo = load_echo()
    token = f"tok-{uuid.uuid4().hex[:12]}\nsecond-line-{uuid.uuid4().hex[:6]}"
    db = tmp_path / "nl.db"
    with echo.EchoServer(status=400, token=token) as server:
        settings = {"base_url": server.url, "token_url": f"{server.url}/token",
                    "client_id": "client-1", "party_id": "NL:KVK:12345678",
                    "client_secret": f"cs-{uuid.uuid4().hex}"}  # fmt: skip
        with Relay(f"sqlite:///{db}", providers={"econnect": settings}, engine=ENGINE) as relay:
            from docrelay import Document

            doc = Document(id="nl-1", provider="econnect", kind="invoice",
                           payload=SAMPLE.read_bytes(), content_type="application/xml")  # fmt: skip
            relay.submit(doc)
            [status] = settle(relay, ["nl-1"], timeout=20)
            texts: dict[str, str | bytes] = {
                "status": repr(status) + json.dumps(status.to_dict(), default=str),
                "history": repr(relay.history("nl-1")),
            }
        assert len(server.requests) == 1, "only the token was fetched: the header was refused"
    texts["log"] = caplog.text
    texts["store"] = store_bytes(db)
    assert status.outcome is not None
    # Never sent (requests refused to build it): honest is config_error, not "unknown".
    assert (status.state.value, status.outcome.kind.value) == ("failed", "config_error"), status
    found = leaks(token, texts) + leaks(token.split("\n", maxsplit=1)[0], texts)

    assert found == []


def test_a_secret_cut_in_half_by_a_plugin_leaks_no_prefix(tmp_path: Path) -> None:
    """A provider echoes the client secret in a 400 where the plugin cuts its message
    (eConnect keeps 500 characters): the core masks secrets in every answer before any
    plugin reads it, so not even the first half of the secret is stored or shown."""
    secret = f"cut-{uuid.uuid4().hex}"

    def answer(path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
        if path.endswith("/token"):
            return 200, {"access_token": f"tok-{uuid.uuid4().hex}", "expires_in": 3600}
        # the cut at 499 characters falls in the middle of the secret
        return 400, {"message": "x" * 480 + secret + " and more"}

    db = tmp_path / "cut.db"
    with json_server(answer) as url:
        settings = {"base_url": url, "token_url": f"{url}/token", "client_id": "client-1",
                    "party_id": "NL:KVK:12345678", "client_secret": secret}  # fmt: skip
        with Relay(f"sqlite:///{db}", providers={"econnect": settings}, engine=ENGINE) as relay:
            from docrelay import Document

            relay.submit(Document(id="cut-1", provider="econnect", kind="invoice",
                                  payload=SAMPLE.read_bytes(),
                                  content_type="application/xml"))  # fmt: skip
            [status] = settle(relay, ["cut-1"], timeout=20)
            text = repr(status) + json.dumps(status.to_dict(), default=str)
            text += repr(relay.history("cut-1"))
    assert status.state.value == "rejected", status
    half = secret[: len(secret) // 2]
    assert half not in text
    assert half.encode() not in store_bytes(db)


def test_a_token_endpoint_that_issues_the_same_token_again_still_works(tmp_path: Path) -> None:
    """OAuth servers often hand out the same token until it expires. The second fetch (by a
    second relay in the same process, where the token is already a registered secret) must
    get the token itself, not a masked one: answers are scrubbed of secrets, but a token
    endpoint's good answer is the token."""
    token = f"same-token-{uuid.uuid4().hex}"

    def answer(path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
        if path.endswith("/token"):
            return 200, {"access_token": token, "expires_in": 3600}
        if headers.get("Authorization") == f"Bearer {token}":
            return 200, {"documentId": "x"}
        return 401, {"message": "no valid bearer token"}

    states = []
    with json_server(answer) as url:
        settings = {
            "base_url": url,
            "token_url": f"{url}/token",
            "client_id": "client-1",
            "party_id": "NL:KVK:12345678",
            "client_secret": f"cs-{uuid.uuid4().hex}",
        }
        from docrelay import Document

        for n in (1, 2):
            db = tmp_path / f"same-{n}.db"
            with Relay(f"sqlite:///{db}", providers={"econnect": settings},
                       engine=ENGINE) as relay:  # fmt: skip
                relay.submit(Document(id=f"same-{n}", provider="econnect", kind="invoice",
                                      payload=SAMPLE.read_bytes(),
                                      content_type="application/xml"))  # fmt: skip
                [status] = settle(relay, [f"same-{n}"], timeout=20)
                states.append(status.state.value)
    assert states == ["delivered", "delivered"], states


@contextlib.contextmanager
def json_server(
    answer: Callable[[str, Mapping[str, str]], tuple[int, Any]],
) -> Iterator[str]:
    """A loopback server whose every POST gets ``answer(path, headers)`` as JSON; yields its
    base URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, data = answer(self.path, self.headers)
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
