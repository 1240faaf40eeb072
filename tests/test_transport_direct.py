"""The transport's direct path (a urllib3 pool per thread, no ``requests.Session`` layer)
sends what the session sent and names failures as it did.

Every check runs over real loopback HTTP against a raw socket server of our own that records
the bytes of each request and the connections it accepted. The session path (what the
transport did before, and still does for URLs requests would refuse or route elsewhere) is
chosen by making the direct path's URL preparation answer "not mine"; both paths must give
the same bytes on the wire, the same answer and the same :class:`TransportError`.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin
from docrelay import HttpRequest, Relay, _transport
from docrelay._models import MAX_BODY_BYTES

#: An answer: bytes to send (ending in CLOSE: then the connection is closed), b"" to close
#: the connection without answering, None to hang.
Answer = Callable[[bytes, int], bytes | None]
CLOSE = b"<close>"


def ok(body: bytes = b'{"id": "1"}', extra: str = "") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


class RawServer:
    """HTTP/1.1 on 127.0.0.1, keep-alive, thread per connection; records each request's
    raw bytes and counts the connections it accepted."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = b""
        with conn:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        if self._stop.is_set():
                            return
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(rest) < length:
                    rest += conn.recv(65536)
                raw, buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(raw)
                reply = self.answer(raw, len(self.requests))
                if reply is None:
                    self._stop.wait(30)
                    return
                if not reply:
                    return
                conn.sendall(reply.removesuffix(CLOSE))
                if reply.endswith(CLOSE):
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _relay(tmp_path: Path, base_url: str, **engine: Any) -> Relay:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Relay(
        f"sqlite:///{tmp_path / 'docrelay.db'}",
        providers={
            "acme": {"base_url": base_url, "client_id": "acme-client", "client_secret": "s3cr3t-x"}
        },
        engine={"connect_timeout": 2.0, "read_timeout": 2.0, **engine},
        plugins=[AcmePlugin()],
        autoload=False,
    )


def _session_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the transport sends through its ``requests.Session`` (as before)."""
    monkeypatch.setattr(_transport, "_target", lambda url, params: None)


REQUESTS = [
    HttpRequest(
        "POST",
        "/documents",
        body=b"<Invoice>1</Invoice>",
        headers={
            "Content-Type": "application/xml",
            "Accept": "application/json",
            "Idempotency-Key": "k-1",
            "Authorization": "Bearer tok",
        },
    ),
    HttpRequest(
        "post",
        "documents/a b/\u00e9t\u00e9?x=1#frag",
        body=b"{}",
        headers={"accept": "text/plain", "user-agent": "erp/1.0", "CONNECTION": "close"},
        params={"receiverId": "NL:KVK 1&2", "channel": "p\u00e9ppol"},
    ),
    HttpRequest("GET", "/documents/42", params={"a": "1"}),
    HttpRequest("DELETE", "/documents/42"),
    HttpRequest("PUT", "/documents/42", headers={"Content-Length": "0"}),
    HttpRequest("PATCH", "/d%20x/%7Efoo", body=b"x" * 70000),
]


def test_many_requests_share_one_kept_alive_connection(
    tmp_path: Path, serve: Callable[[Answer], RawServer]
) -> None:
    server = serve(lambda raw, n: ok())
    with _relay(tmp_path, server.url) as relay:
        rt = relay.engine.runtime("acme")
        for i in range(25):
            response, error = relay.engine.transport.send(
                rt, HttpRequest("POST", "/documents", body=b"doc %d" % i)
            )
            assert error is None, error
            assert response is not None
            assert response.status == 200
    assert len(server.requests) == 25
    assert server.connections == 1, "every request after the first reused the connection"


def test_each_worker_thread_keeps_its_own_connection(
    tmp_path: Path, serve: Callable[[Answer], RawServer]
) -> None:
    server = serve(lambda raw, n: ok())
    with _relay(tmp_path, server.url) as relay:
        rt = relay.engine.runtime("acme")
        errors: list[Any] = []

        def worker() -> None:
            for _ in range(10):
                _, error = relay.engine.transport.send(rt, HttpRequest("GET", "/d"))
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == [None] * 30
    assert server.connections == 3


def _wire(
    tmp_path: Path, serve: Callable[[Answer], RawServer], request: HttpRequest
) -> tuple[bytes, bool]:
    server = serve(lambda raw, n: ok())
    with _relay(tmp_path, server.url) as relay:
        _, error = relay.engine.transport.send(relay.engine.runtime("acme"), request)
        assert error is None, error
        client = relay.engine.transport._client()
        used_direct = bool(client.pools)
    [raw] = server.requests
    # the port differs between the two servers, nothing else may
    return raw.replace(str(server.port).encode(), b"PORT"), used_direct


@pytest.mark.parametrize("index", range(len(REQUESTS)))
def test_the_bytes_on_the_wire_are_the_sessions(
    tmp_path: Path,
    serve: Callable[[Answer], RawServer],
    monkeypatch: pytest.MonkeyPatch,
    index: int,
) -> None:
    """Default headers (User-Agent, Accept-Encoding, Accept, Connection) and the request's
    own over them in any case, URL quoting, parameters, Content-Length: as requests sent."""
    request = REQUESTS[index]
    direct, used_direct = _wire(tmp_path / "a", serve, request)
    _session_path(monkeypatch)
    session, used_session_direct = _wire(tmp_path / "b", serve, request)
    assert used_direct
    assert not used_session_direct
    assert direct == session


def _both(
    tmp_path: Path,
    serve: Callable[[Answer], RawServer],
    monkeypatch: pytest.MonkeyPatch,
    answer: Answer,
    request: HttpRequest,
    **engine: Any,
) -> list[tuple[Any, Any]]:
    """``(response, error)`` of *request* by the direct path, then by the session path,
    each against a fresh server giving *answer*; the ports replaced by ``PORT``."""
    out = []
    for path in ("direct", "session"):
        if path == "session":
            _session_path(monkeypatch)
        server = serve(answer)
        with _relay(tmp_path / path, server.url, **engine) as relay:
            response, error = relay.engine.transport.send(relay.engine.runtime("acme"), request)
        port = str(server.port)
        if response is not None:
            response = (response.status, response.headers, response.body, response.truncated)
        if error is not None:
            error = (error.kind, error.message.replace(port, "PORT"), error.sent)
        out.append((response, error))
    return out


BIG = b"y" * (3 * MAX_BODY_BYTES)
GZ = gzip.compress(b'{"id": "gz"}' * 100)
ANSWERS: dict[str, Answer] = {
    "capped body": lambda raw, n: ok(BIG),
    "gzip body": lambda raw, n: ok(GZ, "Content-Encoding: gzip\r\n"),
    "chunked body": lambda raw, n: (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ),
    "closed before the answer": lambda raw, n: b"",
    "not HTTP": lambda raw, n: b"SSH-2.0-OpenSSH_9.6\r\n",
    "body cut short": lambda raw, n: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort" + CLOSE,
    "chunks cut short": lambda raw, n: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel" + CLOSE
    ),
    "body dripping past the read timeout": lambda raw, n: (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
    ),
    "bad gzip": lambda raw, n: ok(b"not gzip at all", "Content-Encoding: gzip\r\n"),
    "no answer": lambda raw, n: None,
    "redirect": lambda raw, n: (
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2/steal\r\nContent-Length: 0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_answers_and_failures_are_the_sessions(
    tmp_path: Path,
    serve: Callable[[Answer], RawServer],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """The same answer (body capped and marked truncated, decoded, headers joined) or the
    same transport error (kind, message, sent) on both paths; no redirect followed."""
    direct, session = _both(tmp_path, serve, monkeypatch, ANSWERS[case],
                            HttpRequest("POST", "/documents", body=b"doc"),
                            read_timeout=0.5)  # fmt: skip
    assert direct == session
    if case == "capped body":
        assert direct[0][2] == BIG[:MAX_BODY_BYTES]
        assert direct[0][3] is True
    if case == "no answer":
        assert direct[1][0] == "read_timeout"
        assert direct[1][2] is True


@pytest.mark.parametrize(
    "request_",
    [
        HttpRequest("POST", "/documents", headers={"X-Key": " leading space"}),
        HttpRequest("POST", "ftp://127.0.0.1/documents"),
        HttpRequest("POST", "http://user:pw@127.0.0.1:9/documents"),
    ],
    ids=["leading-space-header", "other-scheme", "credentials-in-url"],
)
def test_requests_requests_refuses_are_refused_alike(
    tmp_path: Path,
    serve: Callable[[Answer], RawServer],
    monkeypatch: pytest.MonkeyPatch,
    request_: HttpRequest,
) -> None:
    direct, session = _both(tmp_path, serve, monkeypatch, lambda raw, n: ok(), request_)
    assert direct == session


def test_a_refused_connection_is_named_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    out = []
    for path in ("direct", "session"):
        if path == "session":
            _session_path(monkeypatch)
        with _relay(tmp_path / path, f"http://127.0.0.1:{port}") as relay:
            response, error = relay.engine.transport.send(
                relay.engine.runtime("acme"), HttpRequest("POST", "/documents", body=b"x")
            )
        assert response is None
        assert error is not None
        out.append((error.kind, error.message, error.sent))
    assert out[0] == out[1]
    assert out[0][0] == "connect"
    assert "connection refused by 127.0.0.1" in out[0][1]
    assert out[0][2] is False


def test_cookies_a_provider_sets_are_sent_back_as_the_session_did(
    tmp_path: Path, serve: Callable[[Answer], RawServer]
) -> None:
    server = serve(lambda raw, n: ok(extra="Set-Cookie: sid=abc123; Path=/\r\n" if n == 1 else ""))
    with _relay(tmp_path, server.url) as relay:
        rt = relay.engine.runtime("acme")
        for _ in range(3):
            _, error = relay.engine.transport.send(rt, HttpRequest("GET", "/documents"))
            assert error is None, error
    first, *later = server.requests
    assert b"Cookie:" not in first
    assert all(b"\r\nCookie: sid=abc123\r\n" in r for r in later), later
