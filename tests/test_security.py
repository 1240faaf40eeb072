"""Secrets and transport: nothing leaks, TLS is verified, foreign URLs are not followed,
webhooks refuse what they must and lose nothing.

Secrets: a fault batch across the five sandboxes, delivered in this process with known
secret values (the client secrets, API token, provider and subscription keys of
``fault_worker.SECRETS``, plus every token the eConnect and SieSmart sandboxes issued, read
from their ``TokenIssuer``). Searched: every log record at DEBUG (urllib3 included), the
store's bytes (database, -wal, -shm), ``docrelay status --json`` and ``docrelay why`` (plain
and ``--json``) for every document run as subprocesses that only know the ``${ENV}``
references, and exception texts. Zero occurrences.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from docrelay import Document, Relay
from docrelay._context import TransportFailure
from docrelay._host import PluginHost
from docrelay._models import HttpResponse, OutcomeKind
from docrelay._serve import WebhookServer, settle
from docrelay.exceptions import ConfigError, OutcomeError

DOCRELAY = Path(sys.executable).parent / "docrelay"


# -- secrets ----------------------------------------------------------------------------------


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run([str(DOCRELAY), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_fault_batch_leaks_no_secret(
    fault_kit: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    kit = fault_kit
    sbs = kit.start_sandboxes(seed=11)
    db = tmp_path / "sec.db"
    settings = kit.provider_settings(sbs)
    relay = Relay(f"sqlite:///{db}", providers=settings, engine=kit.ENGINE,
                  insecure_webhooks=True)  # fmt: skip
    server = WebhookServer(relay.wsgi_app).__enter__()
    exceptions: list[str] = []
    try:
        sbs["aqi"].register_callback(f"{server.url}/aqi", ["accounting/EDIErrorSent"])
        docs = kit.build_documents(60, prefix="s")
        relay.submit_many(docs)
        ids = [d.id for d in docs]
        for _ in range(4):
            statuses = settle(relay, ids, timeout=20, workers=2)
            if all(s.is_final for s in statuses):
                break
            sbs["aqi"].redeliver()
        # exception texts: errors that carry provider settings or answers
        token = kit.SECRETS["procuros_api_token"]
        for bad in ({"base_url": f"ftp://{token}@127.0.0.1"},
                    {"base_url": "http://198.51.100.7", "api_token": token}):  # fmt: skip
            with pytest.raises(ConfigError) as exc:
                Relay(f"sqlite:///{tmp_path / 'x.db'}", providers={"procuros": bad})
            exceptions.append(str(exc.value))
        ctx = relay.engine.context(relay.engine.runtime("econnect"))
        with pytest.raises((TransportFailure, OutcomeError)) as tf:
            ctx.request("GET", f"http://198.51.100.7/?k={kit.SECRETS['econnect_client_secret']}")
        exceptions.append(str(tf.value))
        with pytest.raises(ValueError) as ve:
            relay.ingest_notification(
                "aqi", f'{{"type": "{kit.SECRETS["aqi_subscription_key"]}'.encode()
            )
        exceptions.append(str(ve.value))
        texts: list[Any] = [caplog.text, *exceptions]
        texts += [repr(s) for s in relay.statuses()]
        texts += [repr(relay.history(i)) for i in ids]
        texts.append(repr(relay.store.notifications()))
    finally:
        server.__exit__()
        relay.close()
        for sb in sbs.values():
            sb.stop()
    secrets = kit.secret_values(sbs)
    assert len(secrets) > len(kit.SECRETS), "the sandboxes issued tokens"
    texts += [p.read_bytes() for p in tmp_path.glob("sec.db*")]

    # the CLI, in fresh processes that know the secrets only through ${ENV} references
    env_names = {k.upper(): v for k, v in kit.SECRETS.items()}
    cfg_lines = [f'[store]\nurl = "sqlite:///{db}"\n']
    secret_setting = {"client_secret", "api_token", "provider_key", "subscription_key"}
    for name, s in settings.items():
        cfg_lines.append(f"[providers.{name}]")
        for k, v in s.items():
            if k in secret_setting:
                ref = next(e for e, val in env_names.items() if val == v)
                cfg_lines.append(f'{k} = "${{{ref}}}"')
            else:
                cfg_lines.append(f"{k} = {json.dumps(v)}")
    cfg = tmp_path / "docrelay.toml"
    cfg.write_text("\n".join(cfg_lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")} | env_names
    base = ["--config", str(cfg)]
    jobs = [[*base, "status", "--json"], [*base, "status"]]
    jobs += [[*base, "why", i] for i in ids] + [[*base, "why", "--json", i] for i in ids]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda a: _cli(a, tmp_path, env), jobs))
    assert any('"state"' in o for o in outputs)
    texts += outputs
    leaks = kit.find_secrets(texts, secrets)
    assert leaks == [], leaks[:10]


def test_store_redacts_every_outcome_field(tmp_path: Path) -> None:
    """Direct check of the store: an outcome carrying a registered secret in any text field."""
    from docrelay._models import Attempt, Outcome
    from docrelay._redact import register_secret
    from docrelay._store import Transition

    secret = "outcome-field-secret-4411"
    register_secret(secret)
    relay = Relay(f"sqlite:///{tmp_path / 'o.db'}", autoload=False)
    try:
        doc = Document(id="o-1", provider="acme", payload=b"{}")
        relay.store.submit(doc, 0.0)
        for field in ("message", "error_url", "request_id", "trace_id", "provider_status",
                      "provider_ref"):  # fmt: skip
            outcome = Outcome(kind=OutcomeKind.REJECTED, **{field: f"x {secret} y"})
            attempt = Attempt(doc_id="o-1", number=1, revision=doc.revision, key="k",
                              action="send", started_at=0.0, outcome=outcome)  # fmt: skip
            change = Transition(outcome=outcome, attempt=attempt)
            relay.store.apply("o-1", None, change, 0.0)
            dumped = json.dumps(relay.store.history("o-1")[0].outcome.to_dict())
            stored = relay.store.get("o-1")
            assert stored is not None
            assert stored.outcome is not None
            if field in ("message", "error_url"):
                assert secret not in dumped, field
                assert secret not in repr(stored.outcome), field
    finally:
        relay.close()


def test_store_redacts_provider_ids_too(tmp_path: Path) -> None:
    from docrelay._models import Outcome
    from docrelay._redact import register_secret

    secret = "outcome-id-secret-5522"
    register_secret(secret)
    relay = Relay(f"sqlite:///{tmp_path / 'o.db'}", autoload=False)
    try:
        doc = Document(id="o-1", provider="acme", payload=b"{}")
        relay.store.submit(doc, 0.0)
        outcome = Outcome(kind=OutcomeKind.REJECTED, request_id=secret, trace_id=secret,
                          provider_status=secret, provider_ref=secret)  # fmt: skip
        relay.store.update("o-1", None, {"outcome": outcome})
    finally:
        relay.close()
    data = b"".join(p.read_bytes() for p in tmp_path.glob("o.db*"))
    assert secret.encode() not in data


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    openssl = shutil.which("openssl") or "/usr/bin/openssl"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return crt, key


def _https_sandbox(cls: type, cert: tuple[Path, Path], **options: Any) -> Any:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return cls(**options).start(ssl_context=ctx)


def _ebh_doc(i: str) -> Document:
    from importlib import resources

    payload = resources.files("docrelay_ebh").joinpath("samples", "ubf_invoice_ok.xml").read_bytes()
    return Document(id=f"tls-{i}", provider="ebh", kind="invoice", payload=payload,
                    content_type="application/xml",
                    metadata={"invoice_type": "MultipleInvoiceUBF"})  # fmt: skip


def test_tls_is_verified_by_default(cert: tuple[Path, Path], tmp_path: Path) -> None:
    from docrelay_ebh.sandbox import EbhSandbox

    sb = _https_sandbox(EbhSandbox, cert, provider_keys=("tls-provider-key-1",))
    url = f"https://127.0.0.1:{sb.port}"
    base = {"base_url": url, "producer_id": "P1", "provider_key": "tls-provider-key-1"}
    engine = {"max_attempts": 2, "deferral_initial": 0.01, "retry_wait_initial": 0.01,
              "retry_wait_max": 0.02, "poll_initial": 0.02, "poll_max": 0.05}  # fmt: skip
    try:
        with Relay(f"sqlite:///{tmp_path / 'a.db'}", providers={"ebh": base}, engine=engine) as r:
            r.submit(_ebh_doc("1"))
            [s] = settle(r, ["tls-1"], timeout=10)
            assert s.state.value == "failed", s
            assert s.outcome is not None
            assert s.outcome.kind == OutcomeKind.CONFIG_ERROR
            assert "SSL" in (s.outcome.message or "") or "certificate" in (s.outcome.message or "")
        assert sb.requests == [], "nothing reached the server over an unverified connection"
        assert sb.effects == []
        verified = {**base, "verify": str(cert[0])}
        with Relay(
            f"sqlite:///{tmp_path / 'b.db'}", providers={"ebh": verified}, engine=engine
        ) as r:
            r.submit(_ebh_doc("2"))
            [s] = settle(r, ["tls-2"], timeout=15)
            assert s.state.value == "delivered", s
        assert len(sb.effects) == 1
    finally:
        sb.stop()


@pytest.mark.parametrize("name", ["econnect", "procuros", "siesmart", "ebh", "aqi"])
def test_tls_failure_is_a_config_error_for_every_provider(
    cert: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    """A certificate that does not verify fails the document as a configuration error and
    pauses the provider, for every provider (token fetches included), and nothing is sent."""
    from docrelay_ebh.sandbox import EbhSandbox

    host = PluginHost()
    plain = host.hooks(name).provider_sandbox()().start()  # only to build the demo documents
    tls = _https_sandbox(EbhSandbox, cert)
    try:
        batch = host.hooks(name).demo_batch(plain, "http://127.0.0.1:9/webhooks")
        assert batch is not None
        settings = {**dict(batch.settings), "base_url": f"https://127.0.0.1:{tls.port}",
                    "env": None}  # fmt: skip
        if name in ("econnect", "siesmart"):
            settings["token_url"] = f"https://127.0.0.1:{tls.port}/token"
        doc = batch.documents[0]
        with Relay(f"sqlite:///{tmp_path / 't.db'}", providers={name: settings},
                   engine={"max_attempts": 3, "retry_wait_initial": 0.01,
                           "retry_wait_max": 0.02, "deferral_initial": 0.01}) as r:  # fmt: skip
            r.submit(doc)
            [s] = settle(r, [doc.id], timeout=10)
            assert s.state.value == "failed", s
            assert s.outcome is not None
            assert s.outcome.kind == OutcomeKind.CONFIG_ERROR, s.outcome
            assert name in r.paused()
        assert tls.requests == [], "nothing reached the server over an unverified connection"
    finally:
        plain.stop()
        tls.stop()


def test_plain_http_is_refused_for_other_hosts(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    for url in ("http://198.51.100.7", "http://api.procuros.io", "http://[2001:db8::1]:8080"):
        with pytest.raises(ConfigError, match="plain http"):
            Relay(db, providers={"procuros": {"base_url": url, "api_token": "http-secret-1"}})
    econnect = {
        "base_url": "https://psb.example",
        "client_id": "c",
        "party_id": "p",
        "client_secret": "http-secret-2",
        "token_url": "http://identity.example/t",
    }
    with pytest.raises(ConfigError, match="plain http"):
        Relay(db, providers={"econnect": econnect})
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"):
        Relay(db, providers={"procuros": {"base_url": url, "api_token": "http-secret-1"}}).close()
    insecure = {"base_url": "http://198.51.100.7", "api_token": "http-secret-1",
                "allow_insecure_http": True}  # fmt: skip
    Relay(db, providers={"procuros": insecure}).close()


def test_requests_to_foreign_hosts_are_refused(tmp_path: Path) -> None:
    hits: list[str] = []
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        with Relay(f"sqlite:///{tmp_path / 'f.db'}",
                   providers={"procuros": {"base_url": "http://127.0.0.1:9",
                                           "api_token": "foreign-secret-1"}}) as r:  # fmt: skip
            ctx = r.engine.context(r.engine.runtime("procuros"))
            for url in (f"http://127.0.0.2:{port}/steal", "https://198.51.100.7/x",
                        "http://127.0.0.1.nip.io:9/x", f"http://localhost:{port}/x"):  # fmt: skip
                # refused before any connection: a transport failure that was not sent, or
                # (newer core) a config_error outcome
                with pytest.raises((TransportFailure, OutcomeError)) as exc:
                    ctx.request("GET", url)
                if isinstance(exc.value, TransportFailure):
                    assert exc.value.error.kind == "invalid_url"
                    assert not exc.value.error.sent
                else:
                    assert exc.value.outcome.kind == OutcomeKind.CONFIG_ERROR
                hits.append(url)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert len(hits) == 4


def test_ebh_follows_provider_urls_only_on_its_host(tmp_path: Path) -> None:
    from docrelay_ebh._classify import id_from_location, validated_invoice_url

    base = "http://127.0.0.1:8704"
    vid = "0b7c0d4e-5f4a-4b55-9b1e-123456789abc"
    own = f"{base}/ebh/validations/v2/ValidationRequest/{vid}"
    assert id_from_location(own, base) == vid
    for foreign in (f"http://198.51.100.7/ebh/validations/v2/ValidationRequest/{vid}",
                    f"https://127.0.0.1:8704/ebh/validations/v2/ValidationRequest/{vid}",
                    f"http://127.0.0.1:9999/ebh/validations/v2/ValidationRequest/{vid}",
                    f"https:///{{eBHdomain}}/ValidationRequest/{vid}"):  # fmt: skip
        assert id_from_location(foreign, base) is None, foreign
        assert validated_invoice_url({"ValidatedInvoiceUrl": foreign}, base) is None, foreign
    assert validated_invoice_url({"ValidatedInvoiceUrl": f"{base}/inv/1"}, base) == f"{base}/inv/1"
    with Relay(f"sqlite:///{tmp_path / 'e.db'}",
               providers={"ebh": {"base_url": base, "producer_id": "P",
                                  "provider_key": "ebh-url-secret"}}) as r:  # fmt: skip
        ctx = r.engine.context(r.engine.runtime("ebh"))
        ctx.document = _ebh_doc("u")
        answer = HttpResponse(status=201, body=b"", url=base,
                              headers={"Location": f"http://198.51.100.7/x/{vid}"})  # fmt: skip
        outcome = PluginHost().hooks("ebh").classify_response(answer, None, ctx)
    assert outcome.provider_ref != vid
    assert ctx.state.get("validation_id") != vid
    assert outcome.kind == OutcomeKind.UNKNOWN, outcome


# -- webhooks ---------------------------------------------------------------------------------


@pytest.fixture
def hook_relay(tmp_path: Path) -> Iterator[tuple[Relay, str]]:
    r = Relay(f"sqlite:///{tmp_path / 'w.db'}",
              providers={"aqi": {"base_url": "http://127.0.0.1:9",
                                 "subscription_key": "hook-sub-key-1",
                                 "webhook_secret": "hook-secret-abc123"}})  # fmt: skip
    with WebhookServer(r.wsgi_app) as server:
        yield r, server.url
    r.close()


NOTE = {
    "type": "accounting/EDIErrorSent",
    "parameters": {
        "requestType": "GET_ORDER",
        "transactionId": "0a6b660174a3306898a924639688dffb",
        "details": {"orderNo": "ODE1", "result": "OK", "errorDetails": []},
    },
}


def _raw_post(url: str, head: bytes) -> bytes:
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def test_webhooks_refuse_and_record(hook_relay: tuple[Relay, str]) -> None:
    relay, url = hook_relay
    good = f"{url}/aqi/hook-secret-abc123"
    # authentication by the secret in the URL
    assert requests.post(f"{url}/aqi", json=NOTE, timeout=5).status_code == 403
    assert requests.post(f"{url}/aqi/wrong-secret", json=NOTE, timeout=5).status_code == 403
    assert requests.post(f"{url}/aqi/hook-secret-abc12", json=NOTE, timeout=5).status_code == 403
    assert relay.store.notifications() == []
    # over the size limit: 413 before the body is read
    path = "/webhooks/aqi/hook-secret-abc123"
    answer = _raw_post(url, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            f"\r\nContent-Length: {5 * 1024 * 1024}\r\n\r\n".encode())  # fmt: skip
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413"), answer[:80]
    # malformed bodies: 400, never a crash
    for body in (b"{not json", b"", b"\xff\xfe\x00", b"[]", b'{"type": 5}', b"null",
                 json.dumps({**NOTE, "parameters": "x"}).encode()):  # fmt: skip
        r = requests.post(good, data=body, headers={"Content-Type": "application/json"}, timeout=5)
        assert r.status_code == 400, (body, r.status_code, r.text)
    # a notification for a document docrelay does not know: recorded, not lost
    r = requests.post(good, json=NOTE, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "unknown_document", r.text
    notes = relay.store.notifications()
    assert len(notes) == 1
    assert notes[0]["doc_id"] is None
    assert notes[0]["key"] == NOTE["parameters"]["transactionId"]
    # the same again: a duplicate, still one record
    assert requests.post(good, json=NOTE, timeout=5).json()["status"] == "duplicate"
    assert len(relay.store.notifications()) == 1
    assert requests.get(f"{url.rsplit('/', 1)[0]}/healthz", timeout=5).status_code == 200
