"""Provider notifications: :meth:`Relay.ingest_notification` and the WSGI webhook app, served
by waitress on 127.0.0.1 and called over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from acme_testprovider import AcmeSandbox
from docrelay import Relay
from docrelay._serve import WebhookServer
from docrelay._wsgi import make_wsgi_app

MakeRelay = Callable[..., Relay]
HOOK_SECRET = "hook-secret-4d1f9a"


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[..., Any]], str]]:
    """``serve(app)`` runs a WSGI app on a free loopback port (waitress, as ``docrelay
    webhooks`` does); returns its URL."""
    servers: list[WebhookServer] = []

    def start(app: Callable[..., Any]) -> str:
        server = WebhookServer(app).__enter__()
        servers.append(server)
        return server.url.removesuffix("/webhooks")

    yield start
    for s in servers:
        s.__exit__()


@pytest.fixture
def relay(make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox]) -> Relay:
    """A relay whose async documents stay accepted (the sandbox never finishes polling)."""
    sbx = make_sandbox(polls_until_done=10_000)
    return make_relay(sbx, settings={"webhook_secret": HOOK_SECRET},
                      engine={"poll_initial": 60.0})  # fmt: skip


def _note(key: str, result: str = "ok", **extra: Any) -> bytes:
    return json.dumps({"event": "validated", "key": key, "result": result, **extra}).encode()


def _accepted(relay: Relay, acme: Any, doc_id: str = "inv-1") -> str:
    relay.submit(acme.doc(doc_id, kind="async"))
    relay.run_until_idle()
    st = relay.status(doc_id)
    assert st.state.value == "accepted"
    assert st.key is not None
    return st.key


def test_notification_delivers_an_accepted_document(relay: Relay, acme: Any) -> None:
    """A validation notification moves an accepted document to delivered; the same one again
    is a harmless duplicate; a later, different one finds the document already final."""
    key = _accepted(relay, acme)

    assert tuple(
        relay.ingest_notification("acme", _note(key), secret=HOOK_SECRET).to_dict().values()
    ) == (
        "applied",
        "inv-1",
        "delivered",
    )
    st = relay.status("inv-1")
    confirmed = ("delivered", "confirmed by the provider's notification")
    assert (st.state.value, st.reason) == confirmed
    assert relay.ingest_notification("acme", _note(key), secret=HOOK_SECRET).status == "duplicate"
    late = relay.ingest_notification("acme", _note(key, "ok", resent=True), secret=HOOK_SECRET)
    assert (late.status, late.state) == ("already_final", "delivered")
    assert relay.status("inv-1").state.value == "delivered"
    assert [a.action for a in relay.history("inv-1")] == ["send", "notification"]


def test_unknown_document_is_recorded(relay: Relay) -> None:
    """A notification for a key docrelay does not know is kept, never lost."""
    result = relay.ingest_notification("acme", _note("no-such-key"), secret=HOOK_SECRET)

    assert result.status == "unknown_document"
    [note] = relay.store.notifications()
    assert (note["provider"], note["doc_id"], note["key"]) == ("acme", None, "no-such-key")
    assert (
        relay.ingest_notification("acme", _note("no-such-key"), secret=HOOK_SECRET).status
        == "duplicate"
    )
    assert len(relay.store.notifications()) == 1


def test_events_docrelay_does_not_act_on_are_ignored(relay: Relay) -> None:
    """Other event types are recorded as ignored."""
    body = json.dumps({"event": "viewed", "key": "k"}).encode()

    assert relay.ingest_notification("acme", body, secret=HOOK_SECRET).status == "ignored"


def test_notification_rejects_with_errors(relay: Relay, acme: Any) -> None:
    """A failed validation notification rejects the document with the provider's errors."""
    key = _accepted(relay, acme)

    result = relay.ingest_notification(
        "acme", _note(key, "error", errors=["amount missing"]), secret=HOOK_SECRET
    )

    assert (result.status, result.state) == ("applied", "rejected")
    st = relay.status("inv-1")
    assert [f.message for f in st.field_errors] == ["amount missing"]
    assert st.state.value == "rejected"
    late = relay.ingest_notification(
        "acme", _note(key, "error", errors=["still missing"]), secret=HOOK_SECRET
    )
    assert (late.status, late.state) == ("already_final", "rejected")


def test_webhook_app_over_http(relay: Relay, acme: Any, serve: Callable[..., str]) -> None:
    """The WSGI app: secret in the path checked, JSON applied, malformed JSON 400, unknown
    provider 404, GET 405, health check 200."""
    url = serve(relay.wsgi_app)
    key = _accepted(relay, acme)
    hook = f"{url}/webhooks/acme"

    assert requests.post(hook, data=_note(key), timeout=5).status_code == 403
    assert requests.post(f"{hook}/wrong-secret", data=_note(key), timeout=5).status_code == 403
    assert relay.status("inv-1").state.value == "accepted"

    ok = requests.post(f"{hook}/{HOOK_SECRET}", data=_note(key), timeout=5)
    applied = {"status": "applied", "doc_id": "inv-1", "state": "delivered"}
    assert (ok.status_code, ok.json()) == (200, applied)
    again = requests.post(f"{hook}/{HOOK_SECRET}", data=_note(key), timeout=5)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")

    assert requests.post(f"{hook}/{HOOK_SECRET}", data=b"{not json", timeout=5).status_code == 400
    assert requests.post(f"{hook}/{HOOK_SECRET}", json={"x": 1}, timeout=5).status_code == 400
    assert requests.post(f"{url}/webhooks/nope", data=b"{}", timeout=5).status_code == 404
    assert requests.get(f"{hook}/{HOOK_SECRET}", timeout=5).status_code == 405
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert HOOK_SECRET not in json.dumps(relay.store.notifications())


def test_webhook_body_over_the_limit(relay: Relay, serve: Callable[..., str]) -> None:
    """A body larger than the app's limit gets 413 and is not processed."""
    url = serve(make_wsgi_app(relay, max_body=100))
    big = _note("k", padding="x" * 200)

    r = requests.post(f"{url}/webhooks/acme/{HOOK_SECRET}", data=big, timeout=5)
    assert r.status_code == 413
    assert relay.store.notifications() == []
    small = requests.post(f"{url}/webhooks/acme/{HOOK_SECRET}", data=_note("k"), timeout=5)
    assert small.status_code == 200


def test_notification_during_the_send_is_applied_when_it_finishes(
    make_relay: MakeRelay, make_sandbox: Callable[..., AcmeSandbox], acme: Any
) -> None:
    """The provider's notification overtakes its own 202: it is kept as pending and applied
    as soon as the send's answer is committed."""
    sbx = make_sandbox(polls_until_done=10_000, faults=["slow*1:1.5"])
    relay = make_relay(sbx, settings={"webhook_secret": HOOK_SECRET},
                       engine={"poll_initial": 60.0})  # fmt: skip
    relay.submit(acme.doc("inv-1", kind="async"))
    worker = threading.Thread(target=relay.run_until_idle)
    worker.start()
    deadline = time.monotonic() + 5
    while not acme.effects(sbx) and time.monotonic() < deadline:
        time.sleep(0.01)
    st = relay.status("inv-1")
    assert st.state.value == "sending"
    assert st.key is not None

    result = relay.ingest_notification("acme", _note(st.key), secret=HOOK_SECRET)
    worker.join(10)

    assert (result.status, result.state) == ("pending", "sending")
    final = relay.status("inv-1")
    confirmed = ("delivered", "confirmed by the provider's notification")
    assert (final.state.value, final.reason) == confirmed
    [note] = relay.store.notifications()
    assert (note["doc_id"], note["applied"]) == ("inv-1", 1)


def test_a_request_that_does_not_arrive_whole_in_time_is_cut_off() -> None:
    """A connection dripping a request (a byte every 0.1 s, so waitress's inactivity
    timeout never fires) is closed once it has taken longer than the request deadline; an
    idle keep-alive connection past the same time is not (it has no request in part), and
    answers its next request."""
    import socket

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = WebhookServer(app, request_deadline=0.5).__enter__()
    port = int(server.url.split(":")[2].split("/")[0])
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def response(sock: socket.socket) -> bytes:
        """One whole answer (headers and the 2-byte body may come in separate segments)."""
        data = b""
        while not data.endswith(b"\r\n\r\nok"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    drip = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        idle.sendall(request)
        assert response(idle).startswith(b"HTTP/1.1 200")
        drip.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
        drip.settimeout(0.1)
        closed = False
        for _ in range(150):  # up to 15 s of dripping: the deadline is 0.5 s
            try:
                drip.sendall(b" ")
                closed = drip.recv(4096) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        assert closed, "the dripping connection was never cut off"
        idle.sendall(request)  # idle past the deadline, but with no request in part
        assert response(idle).startswith(b"HTTP/1.1 200")
    finally:
        idle.close()
        drip.close()
        server.__exit__()
