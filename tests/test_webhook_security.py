"""Webhooks that are authenticated, bounded and served well, against the AQI sandbox.

Every test sends real HTTP on 127.0.0.1 to docrelay's webhook receiver (waitress, the same
server ``docrelay webhooks`` runs) in front of a relay whose documents the AQI sandbox
accepted. Attackers' requests are counted in ``ATTACKS`` (forged, oversized, malformed) and
each must leave the documents and the store untouched.
"""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from docrelay import DocState, Relay
from docrelay._serve import WebhookServer
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox

SECRET = "whsec-7f3a9c1e55d24b0e"
ENGINE = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "deferral_initial": 0.05}
MIB = 1024 * 1024

#: Requests an attacker sent, by kind; none may get in (see docs/reliability.md).
ATTACKS: Counter[str] = Counter()


@pytest.fixture
def sandbox() -> Iterator[AqiSandbox]:
    sb = AqiSandbox(seed=3).start()
    yield sb
    sb.stop()


class Receiver:
    """A relay against the AQI sandbox, its webhook server, and an accepted order."""

    def __init__(self, tmp: Path, sandbox: AqiSandbox, **relay: Any) -> None:
        settings = {"base_url": sandbox.url, "subscription_key": "aqi-sandbox-key"}
        settings.update(relay.pop("settings", {}))
        self.db = tmp / "hooks.db"
        self.relay = Relay(f"sqlite:///{self.db}", providers={"aqi": settings}, engine=ENGINE,
                           **relay)  # fmt: skip
        self.server = WebhookServer(self.relay.wsgi_app).__enter__()
        self.url = self.server.url
        # No callback is registered: the sandbox's own answer never arrives, the order
        # stays accepted, and only the requests of the test reach the receiver.
        self.relay.submit(sample_document("order-1", "order", "order"))
        self.relay.run_until_idle()
        st = self.relay.status("order-1")
        assert st.state == DocState.ACCEPTED, st
        assert st.key
        self.key = st.key

    def note(self, result: str = "OK", key: str | None = None, pad: int = 0) -> bytes:
        details: dict[str, Any] = {"orderNo": "ODE2024100001", "result": result,
                                   "errorDetails": [{"fieldName": "LINEITEMSTATUS",
                                                     "ErrorDescription": "made up"}]}  # fmt: skip
        if pad:
            details["padding"] = "x" * pad
        return json.dumps({"type": "accounting/EDIErrorSent", "parameters": {
            "requestType": "GET_ORDER", "transactionId": key or self.key,
            "details": details}}).encode()  # fmt: skip

    def size(self) -> int:
        """The store's size once the WAL is written back (the WAL file is reused, so only
        the database file can grow for good)."""
        with sqlite3.connect(self.db) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(p.stat().st_size for p in self.db.parent.glob(self.db.name + "*"))

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


def _post(url: str, body: bytes, kind: str, **kw: Any) -> requests.Response:
    ATTACKS[kind] += 1
    return requests.post(url, data=body, headers={"Content-Type": "application/json"},
                         timeout=30, **kw)  # fmt: skip


def test_forged_notification_without_a_configured_secret_is_refused(make: Any) -> None:
    """The default configuration (no webhook_secret) takes no notification: a forged OK and a
    forged ERROR_IN_FILE with the document's transactionId change nothing, store nothing,
    and the answers do not say which documents exist."""
    r = make()
    answers = [
        _post(f"{r.url}/aqi", r.note("OK"), "forged"),
        _post(f"{r.url}/aqi", r.note("ERROR_IN_FILE"), "forged"),
        _post(f"{r.url}/aqi/guess", r.note("OK"), "forged"),
        _post(f"{r.url}/aqi", r.note("OK", key="no-such-transaction"), "forged"),
    ]

    assert [a.status_code for a in answers] == [503, 503, 503, 503]
    assert len({a.text for a in answers}) == 1, "the same answer, whatever the document"
    assert "order-1" not in answers[0].text
    assert r.key not in answers[0].text
    st = r.relay.status("order-1")
    assert st.state == DocState.ACCEPTED
    assert [a.action for a in r.relay.history("order-1")] == ["send"]
    assert r.relay.store.notifications() == []


def test_library_ingest_takes_the_same_check(make: Any) -> None:
    """Relay.ingest_notification refuses without the secret too; an explicit opt-in
    (insecure_webhooks=True) takes it."""
    from docrelay import WebhookRefused

    r = make()
    with pytest.raises(WebhookRefused) as exc:
        r.relay.ingest_notification("aqi", r.note("OK"))
    assert exc.value.status == 503
    assert r.relay.status("order-1").state == DocState.ACCEPTED

    s = make(settings={"webhook_secret": SECRET})
    for given in (None, "", "guess-7781", SECRET[:-1], SECRET + "x", SECRET.upper()):
        ATTACKS["forged"] += 1
        with pytest.raises(WebhookRefused) as exc:
            s.relay.ingest_notification("aqi", s.note("OK"), secret=given)
        assert exc.value.status == 403
        assert (given or "<none>") not in str(exc.value)
    assert s.relay.status("order-1").state == DocState.ACCEPTED
    assert s.relay.ingest_notification("aqi", s.note("OK"), secret=SECRET).status == "applied"


def test_insecure_opt_in_is_explicit(make: Any) -> None:
    """Relay(insecure_webhooks=True) takes notifications without a secret (loopback tests)."""
    r = make(insecure_webhooks=True)

    ok = requests.post(f"{r.url}/aqi", data=r.note("OK"), timeout=10)

    assert (ok.status_code, ok.json()["status"]) == (200, "applied")
    assert r.relay.status("order-1").state == DocState.DELIVERED


def test_wrong_secret_is_403_logged_once_without_the_value(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With a secret configured, a missing or wrong one is 403 (nothing stored, one warning
    per request without the given value); the right one applies the notification."""
    caplog.set_level(logging.INFO)
    r = make(settings={"webhook_secret": SECRET})
    tries = ["", "/guess-7781", f"/{SECRET[:-1]}", f"/{SECRET}x", f"/{SECRET.upper()}", "/a/b"]
    answers = [_post(f"{r.url}/aqi{t}", r.note("ERROR_IN_FILE"), "forged") for t in tries]

    assert [a.status_code for a in answers] == [403, 403, 403, 403, 403, 404]
    assert r.relay.status("order-1").state == DocState.ACCEPTED
    assert r.relay.store.notifications() == []
    refusals = [m for m in caplog.messages if "refused" in m]
    assert len(refusals) == 5
    for t in tries:
        if t.strip("/"):
            assert t.strip("/") not in caplog.text
    ok = requests.post(f"{r.url}/aqi/{SECRET}", data=r.note("OK"), timeout=10)
    assert (ok.status_code, ok.json()["status"]) == (200, "applied")
    assert SECRET not in caplog.text
    assert "/webhooks/aqi/<secret>" in caplog.text  # the access log, secret hidden


def test_a_flood_of_large_notifications_does_not_grow_the_store(make: Any) -> None:
    """60 unauthenticated 1 MiB notifications, and 60 authenticated ones over the limit: all
    refused (413/403/503) and the store files keep their size to the byte."""
    r = make(settings={"webhook_secret": SECRET})
    before = r.size()
    big = r.note("OK", key="unknown-tx", pad=MIB - 2048)  # just under the server's limit
    codes = Counter()
    for i in range(60):
        codes[_post(f"{r.url}/aqi/nope{i}", big, "oversized").status_code] += 1
        codes[_post(f"{r.url}/aqi/{SECRET}", big, "oversized").status_code] += 1

    assert set(codes) <= {403, 413}, codes
    assert r.size() == before
    assert r.relay.store.notifications() == []
    assert r.relay.status("order-1").state == DocState.ACCEPTED


def test_unmatched_notifications_are_capped_truncated_and_counted(make: Any) -> None:
    """Authenticated notifications for no known document: a smaller body limit (413 above
    it), bodies stored cut to the limit, at most the cap kept (oldest dropped, counted)."""
    r = make(settings={"webhook_secret": SECRET},
             webhooks={"max_unmatched_per_provider": 20, "stored_unmatched_body_bytes": 256,
                       "max_unmatched_body_bytes": 4096, "rate_limit": "10000/1"})  # fmt: skip
    hook = f"{r.url}/aqi/{SECRET}"
    over = _post(hook, r.note("OK", key="tx-big", pad=8000), "oversized")
    assert over.status_code == 413
    before = r.size()
    for i in range(200):
        answer = requests.post(hook, data=r.note("OK", key=f"tx-{i}", pad=3000), timeout=10)
        assert answer.json()["status"] == "unknown_document"

    stats = r.relay.notification_stats()["aqi"]
    assert stats == {"stored": 20, "unmatched": 20, "dropped": 180}
    kept = [n["key"] for n in r.relay.store.notifications()]
    assert kept == [f"tx-{i}" for i in range(180, 200)], "the oldest are dropped first"
    with sqlite3.connect(r.db) as db:
        lengths = [n for (n,) in db.execute("SELECT length(body) FROM notifications")]
    assert max(lengths) <= 256
    assert r.size() - before < 256 * 1024, "200 x 3 KB notifications kept within the cap"
    assert r.relay.status("order-1").state == DocState.ACCEPTED


def test_rate_limit_per_source_address(make: Any) -> None:
    """Past the limit a source gets 429 with Retry-After; another source still gets in."""
    r = make(settings={"webhook_secret": SECRET}, webhooks={"rate_limit": "5/3600"})
    port = int(r.url.split(":")[2].split("/")[0])

    def post(source: str, secret: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                          source_address=(source, 0))  # fmt: skip
        conn.request("POST", f"/webhooks/aqi/{secret}", body=r.note("OK", key="tx-rl"),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        answer = conn.getresponse()
        answer.read()
        conn.close()
        return answer

    codes = []
    for _ in range(8):
        ATTACKS["forged"] += 1
        codes.append(post("127.0.0.1", "wrong").status)
    limited = post("127.0.0.1", SECRET)
    other = post("127.0.0.2", SECRET)

    assert codes == [403] * 5 + [429] * 3
    assert limited.status == 429
    assert int(limited.getheader("Retry-After") or 0) >= 1
    assert other.status == 200


def test_chunked_body_is_taken_and_limited(make: Any) -> None:
    """A chunked body (no Content-Length) is read and applied; one over the limit is 413."""
    r = make(settings={"webhook_secret": SECRET})
    body = r.note("OK")

    ok = requests.post(f"{r.url}/aqi/{SECRET}", data=iter([body[:10], body[10:]]),
                       headers={"Content-Type": "application/json"}, timeout=10)  # fmt: skip
    ATTACKS["oversized"] += 1
    big = requests.post(f"{r.url}/aqi/{SECRET}", data=iter([b"{" + b" " * 4096] * 40),
                        headers={"Content-Type": "application/json"}, timeout=10)  # fmt: skip

    assert (ok.status_code, ok.json()["status"]) == (200, "applied")
    assert big.status_code == 413
    assert r.relay.status("order-1").state == DocState.DELIVERED


def test_malformed_requests_are_refused_and_change_nothing(make: Any) -> None:
    """Bad JSON, wrong shapes, wrong content types and methods: 4xx, nothing applied."""
    r = make(settings={"webhook_secret": SECRET})
    hook = f"{r.url}/aqi/{SECRET}"
    bodies = [b"{not json", b"", b"\xff\xfe\x00", b"[]", b'{"type": 5}', b"null", b"1e999999",
              b'{"type": "accounting/EDIErrorSent", "parameters": "x"}',
              b"[" * 60_000]  # fmt: skip
    codes = [_post(hook, b, "malformed").status_code for b in bodies]
    ATTACKS["malformed"] += 2
    form = requests.post(hook, data={"a": "b"}, timeout=10)
    get = requests.get(hook, timeout=10)

    assert codes == [400] * len(bodies), codes
    assert (form.status_code, get.status_code) == (415, 405)
    assert all("error" in json.loads(a) for a in (form.text, get.text))
    assert r.relay.status("order-1").state == DocState.ACCEPTED
    assert r.relay.store.notifications() == []


def test_installed_but_not_configured_provider_answers_json_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook for a provider that is installed but not configured: JSON 503, one line,
    no traceback."""
    caplog.set_level(logging.DEBUG)
    relay = Relay(f"sqlite:///{tmp_path / 'n.db'}", providers={})
    with WebhookServer(relay.wsgi_app) as server:
        ATTACKS["forged"] += 1
        answer = requests.post(f"{server.url}/aqi/whatever", json={"type": "x"}, timeout=10)
        unknown = requests.post(f"{server.url}/nope/x", json={"type": "x"}, timeout=10)
    relay.close()

    assert answer.status_code == 503
    assert answer.json() == {"error": "provider aqi is not configured"}
    assert unknown.status_code == 404
    assert "Traceback" not in caplog.text
    assert not any(rec.exc_info for rec in caplog.records)


@pytest.fixture(scope="module", autouse=True)
def _tally() -> Iterator[None]:
    """Print how many attacking requests this module sent (for docs/reliability.md)."""
    yield
    print(f"\nwebhook attacks sent: {dict(ATTACKS)}, total {sum(ATTACKS.values())}")


def test_the_servers_own_log_lines_hide_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    """waitress logs "Exception while serving <path>" when an app raises: served by
    docrelay, that line shows /webhooks/aqi/<secret>, never the secret."""
    caplog.set_level(logging.DEBUG)

    def broken(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("boom")

    with WebhookServer(broken) as server:
        answer = requests.post(f"{server.url}/aqi/{SECRET}", data=b"{}", timeout=10)

    assert answer.status_code == 500
    assert "Exception while serving /webhooks/aqi/<secret>" in caplog.text
    assert SECRET not in caplog.text
