"""Red team: "webhooks and secrets: nothing forged gets in, nothing secret gets out".

Every attack goes over real HTTP on 127.0.0.1 to docrelay's webhook receiver (waitress, as
``docrelay webhooks`` serves it) in front of a relay whose order the AQI sandbox accepted.
A test marked ``xfail(strict=True)`` is a break that is still open; its reason says what
breaks. The others are breaks fixed in the same commit, or attacks that held.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import logging
import os
import socket
import sqlite3
import string
import subprocess
import sys
import threading
import unicodedata
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from docrelay import DocState, Relay
from docrelay._redact import redact
from docrelay._serve import WebhookServer
from docrelay.exceptions import ConfigError
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox

WEBHOOK_SECRET = "whsec-rt2-Q8v2Lm4Tz9"
DOCRELAY = Path(sys.executable).parent / "docrelay"
SAMPLE = (
    Path(__file__).parent.parent
    / "plugins/econnect/src/docrelay_econnect/samples/invoice-INV-2024-0101.xml"
)
ENGINE = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "deferral_initial": 0.05}


@pytest.fixture
def sandbox() -> Iterator[AqiSandbox]:
    sb = AqiSandbox(seed=5).start()
    yield sb
    sb.stop()


class Receiver:
    """A relay against the AQI sandbox, its webhook server and an accepted order (no
    callback registered: only the test's requests reach the receiver)."""

    def __init__(self, tmp: Path, sandbox: AqiSandbox, **relay: Any) -> None:
        settings = {"base_url": sandbox.url, "subscription_key": "aqi-sandbox-key",
                    "webhook_secret": WEBHOOK_SECRET}  # fmt: skip
        settings.update(relay.pop("settings", {}))
        self.db = tmp / "hooks.db"
        self.relay = Relay(f"sqlite:///{self.db}", providers={"aqi": settings}, engine=ENGINE,
                           **relay)  # fmt: skip
        self.server = WebhookServer(self.relay.wsgi_app).__enter__()
        self.url = self.server.url
        self.port = int(self.url.split(":")[2].split("/")[0])
        self.relay.submit(sample_document("order-1", "order", "order"))
        self.relay.run_until_idle()
        st = self.relay.status("order-1")
        assert st.state == DocState.ACCEPTED, st
        assert st.key
        self.key = st.key

    def note(self, result: str = "OK", key: str | None = None, **extra: Any) -> bytes:
        details: dict[str, Any] = {"orderNo": "ODE2024100001", "result": result,
                                   "errorDetails": [{"fieldName": "LINEITEMSTATUS",
                                                     "ErrorDescription": "made up"}]}  # fmt: skip
        details.update(extra)
        return json.dumps({"type": "accounting/EDIErrorSent", "parameters": {
            "requestType": "GET_ORDER", "transactionId": key or self.key,
            "details": details}}).encode()  # fmt: skip

    def size(self) -> int:
        with sqlite3.connect(self.db) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(p.stat().st_size for p in self.db.parent.glob(self.db.name + "*"))

    def store_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.db.parent.glob(self.db.name + "*"))

    def close(self) -> None:
        self.server.__exit__()
        self.relay.close()


@pytest.fixture
def make(tmp_path: Path, sandbox: AqiSandbox) -> Iterator[Any]:
    made: list[Receiver] = []

    def build(**relay: Any) -> Receiver:
        where = tmp_path / str(len(made))
        where.mkdir()
        r = Receiver(where, sandbox, **relay)
        made.append(r)
        return r

    yield build
    for r in made:
        r.close()


def _post(url: str, body: bytes, **kw: Any) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json"},
                         timeout=30, **kw)  # fmt: skip


# -- breaks -----------------------------------------------------------------------------------


def test_unmatched_notification_cut_keeps_no_prefix_of_a_secret(make: Any) -> None:
    """An unmatched notification is stored cut to ``stored_unmatched_body_bytes``. The cut
    came before redaction, so a secret the body carries across the cut was stored as a
    prefix that no longer matches the secret (same class as the plugin-cut fix)."""
    key = WEBHOOK_SECRET  # the provider echoes its callback URL in the notification
    r = make(webhooks={"stored_unmatched_body_bytes": 256})
    head = json.dumps({"type": "invoiceCreated", "parameters": {"echo": ""}})
    path = "/webhooks/aqi/"
    lead = 256 - 10 - len(head) - len(path) + 3  # the cut lands 10 characters into the key
    echo = {"echo": "x" * lead + path + key}
    body = json.dumps({"type": "invoiceCreated", "parameters": echo}).encode()
    assert body.index(key.encode()) == 246

    answer = _post(f"{r.url}/aqi/{WEBHOOK_SECRET}", body)

    assert answer.json()["status"] == "ignored"
    stored = [n.get("body") for n in r.relay.store.notifications()]
    assert stored, "the unmatched notification is recorded"
    raw = r.store_bytes()
    assert key[:10].encode() not in raw, "a prefix of the secret is in the store file"
    assert all(key[:10] not in str(b) for b in stored)


def test_a_secret_in_another_unicode_normal_form_is_masked(make: Any) -> None:
    """A secret with accents, registered as configured (NFC), echoed by a provider after
    normalising it (NFD, as Java's and macOS's normalisers do) or in compatibility form."""
    secret = unicodedata.normalize("NFC", "pässwörd-Ünïcode-9")
    make(settings={"webhook_secret": secret})
    nfd = unicodedata.normalize("NFD", secret)
    assert nfd != secret

    for form in (nfd, json.dumps(nfd), repr(nfd), requests.utils.quote(nfd)):
        text = redact(f"provider says: bad key {form}")
        assert "***" in text, form
        assert "w" not in text.split("bad key ")[1].replace("***", ""), text


def test_a_guessable_webhook_secret_is_refused(make: Any) -> None:
    """webhook_secret = "7" passes configuration; the rate limit (600/60) lets one address
    try every character, so a forged rejection gets in."""
    try:
        r = make(settings={"webhook_secret": "7"})
    except ConfigError:
        return  # refused at configuration: held
    for c in string.ascii_letters + string.digits:
        _post(f"{r.url}/aqi/{c}", r.note("ERROR_IN_FILE"))

    assert r.relay.status("order-1").state == DocState.ACCEPTED


def test_a_short_secret_is_refused_or_masked(make: Any) -> None:
    """A 5-character secret setting passes configuration; redact() (logs, attempts, CLI,
    store) leaves it as it is."""
    short = "k3Y5!"
    try:
        make(settings={"webhook_secret": short})
    except ConfigError:
        return
    assert short not in redact(f"401: subscription key {short} is not valid")


def test_notifications_for_a_known_document_do_not_grow_the_store_without_bound(
    make: Any,
) -> None:
    """After the document is final, 120 distinct OKs of about 60 KiB for it (under the body
    limit, with the secret, e.g. a provider redelivering with a new timestamp each time) are
    each answered already_final. They were each stored in full (7 MiB for one document); now
    at most ``max_settled_per_document`` (10 here) settled ones are kept, the not applicable
    ones dropped first, and the dropped are counted. The one that applied stays."""
    r = make(webhooks={"rate_limit": "10000/1", "max_settled_per_document": 10})
    hook = f"{r.url}/aqi/{WEBHOOK_SECRET}"
    assert _post(hook, r.note("OK")).json()["status"] == "applied"
    before = r.size()
    for i in range(120):
        answer = _post(hook, r.note("OK", sentAt=i, padding="x" * 60_000))
        assert answer.status_code == 200
        assert answer.json()["status"] == "already_final"

    assert r.relay.status("order-1").state == DocState.DELIVERED
    grown = r.size() - before
    assert grown < 1024 * 1024, f"the store grew by {grown} bytes for one document"
    kept = r.relay.store.notifications("order-1")
    assert len(kept) == 11  # 10 settled, and the newest (marked after it was stored)
    assert [n["note"] for n in kept if n["applied"] == 1] == ["applied"]
    assert r.relay.notification_stats()["aqi"]["dropped"] == 110


def test_dripping_connections_from_one_address_do_not_lock_out_the_provider(
    make: Any,
) -> None:
    """One source opens 110 connections and drips a body that never ends (one byte a
    second, so waitress's channel_timeout never fires). The provider's own notification,
    with the secret, must still be answered. (They held waitress's connection_limit, 100,
    and no webhook was served: now the connections waiting longest for a whole request make
    room at the limit, and none may take more than 30 s to deliver one.)"""
    r = make()
    socks = []
    stop = threading.Event()
    for _ in range(110):
        s = socket.create_connection(("127.0.0.1", r.port))
        s.sendall(b"POST /webhooks/aqi/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 100000\r\n\r\n{")  # fmt: skip
        socks.append(s)

    def drip() -> None:
        for _ in range(120):  # bounded: two minutes at most
            if stop.wait(1.0):
                return
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b" ")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        try:
            answer: requests.Response | None = requests.post(
                f"{r.url}/aqi/{WEBHOOK_SECRET}", data=r.note("OK"),
                headers={"Content-Type": "application/json"}, timeout=20)  # fmt: skip
        except requests.RequestException:
            answer = None
    finally:
        stop.set()
        dripper.join(5)
        for s in socks:
            s.close()

    assert answer is not None, "the provider's notification was never answered"
    assert answer.json()["status"] == "applied"


def test_the_servers_log_lines_hide_the_secret_behind_doubled_slashes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The receiver takes ``//webhooks/aqi/<secret>`` and ``/webhooks//aqi/<secret>`` (a
    callback URL joined with one slash too many); waitress's "Exception while serving
    <path>" showed the secret for those forms (the filter wanted exactly one slash)."""
    caplog.set_level(logging.DEBUG)
    secret = "whsec-doubled-Zz81Qm"

    def broken(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("boom")

    with WebhookServer(broken) as server:
        base = server.url.rsplit("/webhooks", 1)[0]
        for path in (f"//webhooks/aqi/{secret}", f"/webhooks//aqi/{secret}",
                     f"/webhooks/aqi//{secret}"):  # fmt: skip
            assert requests.post(base + path, data=b"{}", timeout=10).status_code == 500

    served = [r for r in caplog.records if r.name.startswith("waitress")]  # not the client's
    lines = [r.getMessage() + (r.exc_text or "") for r in served]
    assert sum("Exception while serving" in line for line in lines) == 3
    assert not [line for line in lines if secret in line]


# -- attacks that held ------------------------------------------------------------------------


def _raw(r: Receiver, method: str, path: str, body: bytes = b"", **headers: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer.status


def test_forged_requests_by_path_method_header_and_body_tricks_get_nothing_in(
    make: Any,
) -> None:
    """The secret as a prefix or suffix, split by a slash, upper-cased, NUL-padded, in the
    query string or in a header; other methods; gzip, XML and invalid UTF-8 bodies with the
    right secret: refused, nothing stored, the document still accepted."""
    r = make(webhooks={"rate_limit": "10000/1"})
    s = WEBHOOK_SECRET
    forged = r.note("ERROR_IN_FILE")
    paths = [f"/webhooks/aqi/{s[:-1]}", f"/webhooks/aqi/{s}x", f"/webhooks/aqi/x{s}",
             f"/webhooks/aqi?{s}", f"/webhooks/aqi/?secret={s}", f"/webhooks/aqi/{s[:9]}/{s[9:]}",
             f"/webhooks/aqi/..%2F{s}", f"/webhooks/aqi/{s.upper()}", f"/webhooks/aqi/%00{s}",
             f"/webhooks/aqi/{s}%00", "/webhooks/aqi/", f"/webhooks/AQI/{s}",
             f"/webhooks/aqi/{s}/../x", f"/x/../webhooks/aqi/{s[:-1]}"]  # fmt: skip
    codes = [_raw(r, "POST", p, forged) for p in paths]
    in_headers = {"X-Webhook-Secret": s, "Authorization": f"Bearer {s}"}
    codes.append(_raw(r, "POST", "/webhooks/aqi", forged, **in_headers))
    codes += [_raw(r, m, f"/webhooks/aqi/{s}", forged) for m in ("GET", "PUT", "DELETE", "HEAD")]
    hook = f"/webhooks/aqi/{s}"
    codes.append(_raw(r, "POST", hook, gzip.compress(forged), **{"Content-Encoding": "gzip"}))
    codes.append(_raw(r, "POST", hook, forged, **{"Content-Type": "application/xml"}))
    codes.append(_raw(r, "POST", hook, forged.replace(b"made up", b"made \xff\xfe up")))
    codes.append(_raw(r, "POST", hook, b'{"a":' * 10_000 + b"1" + b"}" * 10_000))

    assert all(400 <= c < 500 for c in codes), codes
    assert r.relay.status("order-1").state == DocState.ACCEPTED
    assert r.relay.store.notifications() == []


def test_x_forwarded_for_does_not_escape_the_rate_limit_without_a_trusted_proxy(
    make: Any,
) -> None:
    """Without ``trusted_proxy``, a spoofed X-Forwarded-For does not give a new bucket."""
    r = make(webhooks={"rate_limit": "5/3600"})
    codes = [_raw(r, "POST", "/webhooks/aqi/wrong", r.note("OK"),
                  **{"X-Forwarded-For": f"10.0.0.{i}", "Forwarded": f"for=10.0.1.{i}"})
             for i in range(8)]  # fmt: skip

    assert codes == [403] * 5 + [429] * 3


class _NormalisingTokenEndpoint(BaseHTTPRequestHandler):
    """A token endpoint that refuses the client credentials and quotes the secret back
    after normalising it to NFD (as a Java or macOS service does)."""

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"])).decode("ascii")
        given = urllib.parse.parse_qs(data).get("client_secret", [""])[0]
        said = unicodedata.normalize("NFD", given)
        body = json.dumps({"message": f"invalid client_secret {said}",
                           "detail": said}, ensure_ascii=False).encode()  # fmt: skip
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_secret_echoed_in_nfd_leaks_into_no_cli_output_or_store(tmp_path: Path) -> None:
    """``send``, ``status --json`` and ``why --json`` in fresh processes, and the store's
    bytes, against a token endpoint that echoes the NFC client secret in NFD."""
    secret = unicodedata.normalize("NFC", "Crème-brûlée-Geheimnis-7")
    nfd = unicodedata.normalize("NFD", secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NormalisingTokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    db = tmp_path / "nfd.db"
    (tmp_path / "docrelay.toml").write_text(
        f'[store]\nurl = "sqlite:///{db}"\n\n[providers.econnect]\n'
        f'base_url = "{url}"\ntoken_url = "{url}/token"\n'
        'client_id = "client-1"\nparty_id = "NL:KVK:12345678"\n'
        'client_secret = "${EC_CLIENT_SECRET}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    env["EC_CLIENT_SECRET"] = secret
    outputs = []
    try:
        for args in (["send", "--provider", "econnect", str(SAMPLE)], ["status", "--json"],
                     ["why", "--json", SAMPLE.stem]):  # fmt: skip
            proc = subprocess.run([str(DOCRELAY), *args], cwd=tmp_path, env=env, text=True,
                                  capture_output=True, timeout=60, check=False)  # fmt: skip
            assert "Traceback" not in proc.stderr, proc.stderr
            outputs.append(proc.stdout + proc.stderr)
    finally:
        server.shutdown()
        server.server_close()
    text = "\n".join(outputs)
    assert "config_error" in text, text
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("nfd.db*"))
    for form in (nfd, json.dumps(nfd)[1:-1]):
        assert form not in text
        assert form.encode() not in raw
