"""Red team against the direct transport (a urllib3 pool per thread): hostile answers over
real loopback HTTP, each compared with the ``requests.Session`` path where both apply.

Breaks found (each a test here): a 103 Early Hints or 102 before the answer was taken for
the answer (http.client skips 100 only); a cookie one provider set went to another provider on the
same host (a cookie jar ignores the port; the thread's one session served every provider);
an answer with conflicting ``Content-Length`` values was named "request not sent" (a
configuration error) although the request had arrived.
"""

from __future__ import annotations

import gzip
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from docrelay import HttpRequest
from docrelay._classify import DOCRELAY_TRANSPORT_FAULTS
from docrelay._models import MAX_BODY_BYTES

sys.path.insert(0, str(Path(__file__).parent))
from test_transport_direct import CLOSE, Answer, RawServer, _both, _relay, ok


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_a_providers_cookie_never_reaches_another_provider_on_the_same_host(
    tmp_path: Path, serve: Callable[[Answer], RawServer]
) -> None:
    """Two providers on one host (sandboxes on 127.0.0.1, or two APIs behind one gateway):
    the session cookie the first sets must not be sent to the second."""
    first = serve(lambda raw, n: ok(extra="Set-Cookie: sid=FIRST-SESSION; Path=/\r\n"))
    second = serve(lambda raw, n: ok())
    with _relay(tmp_path, first.url) as relay:
        rt = relay.engine.runtime("acme")
        other = attrs.evolve(rt, base_url=second.url, info=attrs.evolve(rt.info, name="other"))
        transport = relay.engine.transport
        for _ in range(2):
            assert transport.send(rt, HttpRequest("GET", "/documents"))[1] is None
            assert transport.send(other, HttpRequest("GET", "/documents"))[1] is None
    assert b"Cookie: sid=FIRST-SESSION" in first.requests[1], "its own cookie goes back"
    assert all(b"FIRST-SESSION" not in r for r in second.requests), second.requests


def test_a_provider_that_sets_a_cookie_keeps_the_deadline_and_the_cap(
    tmp_path: Path, serve: Callable[[Answer], RawServer]
) -> None:
    """After a Set-Cookie the provider's requests go through its session: the body is still
    capped, and an answer that never comes still ends at the request deadline."""
    big = b"z" * (3 * MAX_BODY_BYTES)

    def answer(raw: bytes, n: int) -> bytes | None:
        if n == 1:
            return ok(extra="Set-Cookie: sid=s1; Path=/\r\n")
        return ok(big) if n == 2 else None

    server = serve(answer)
    with _relay(tmp_path, server.url, request_deadline=1.0, read_timeout=30.0) as relay:
        rt = relay.engine.runtime("acme")
        transport = relay.engine.transport
        assert transport.send(rt, HttpRequest("GET", "/d"))[1] is None
        response, error = transport.send(rt, HttpRequest("GET", "/d"))
        assert error is None
        assert response is not None
        assert response.truncated
        assert response.body == big[:MAX_BODY_BYTES]
        response, error = transport.send(rt, HttpRequest("POST", "/d", body=b"x"))
        assert response is None
        assert error is not None
        assert error.kind == "read_timeout"
        assert "request deadline" in error.message
        assert error.sent is True
    assert all(b"Cookie: sid=s1" in r for r in server.requests[1:])


HOSTILE: dict[str, Answer] = {
    "conflicting content-length": lambda raw, n: (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello"
    ),
    "too many headers": lambda raw, n: ok(extra="".join(f"X-H{i}: v\r\n" for i in range(150))),
    "a header line of 200 KB": lambda raw, n: ok(extra="X-Big: " + "a" * 200_000 + "\r\n"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_malformed_answer_head_means_the_request_was_sent(
    tmp_path: Path,
    serve: Callable[[Answer], RawServer],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """The request arrived before the answer's head turned out unreadable: never a
    configuration error saying "not sent" (a resend without a key would be a second
    delivery), the same on both paths."""
    direct, session = _both(tmp_path, serve, monkeypatch, HOSTILE[case],
                            HttpRequest("POST", "/documents", body=b"doc"))  # fmt: skip
    assert direct == session
    response, (kind, message, sent) = direct
    assert response is None
    assert sent is True
    assert kind not in DOCRELAY_TRANSPORT_FAULTS
    assert "not sent" not in message


def test_a_gzip_bomb_is_capped_on_the_decoded_size_without_inflating_it(
    tmp_path: Path, serve: Callable[[Answer], RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 MB of zeros in 50 KB of gzip: the body is cut at MAX_BODY_BYTES of decoded bytes
    and the transport never holds more than a few chunks of it (both paths)."""
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), 9)
    for path in ("direct", "session"):
        if path == "session":
            monkeypatch.setattr("docrelay._transport._target", lambda url, params: None)
        server = serve(lambda raw, n: ok(bomb, "Content-Encoding: gzip\r\n"))
        with _relay(tmp_path / path, server.url) as relay:
            rt = relay.engine.runtime("acme")
            tracemalloc.start()
            try:
                response, error = relay.engine.transport.send(rt, HttpRequest("GET", "/d"))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert error is None, error
        assert response is not None
        assert response.truncated
        assert response.body == b"\0" * MAX_BODY_BYTES
        assert peak < 8 * 1024 * 1024, (path, peak)


def test_an_http_1_0_answer_and_a_100_continue_are_read_alike(
    tmp_path: Path, serve: Callable[[Answer], RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    for answer in (
        lambda raw, n: b"HTTP/1.0 200 OK\r\n\r\nhello" + CLOSE,
        lambda raw, n: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after continue"),
    ):
        monkeypatch.undo()
        direct, session = _both(tmp_path / str(id(answer)), serve, monkeypatch, answer,
                                HttpRequest("POST", "/documents", body=b"doc"))  # fmt: skip
        assert direct == session
        assert direct[1] is None
        assert direct[0][0] == 200


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"


@pytest.mark.parametrize(
    "informational",
    [EARLY_HINTS, PROCESSING + EARLY_HINTS, b"HTTP/1.1 100 Continue\r\n\r\n" + EARLY_HINTS],
    ids=["103", "102-103", "100-103"],
)
def test_informational_answers_before_the_final_one_are_skipped(
    tmp_path: Path,
    serve: Callable[[Answer], RawServer],
    monkeypatch: pytest.MonkeyPatch,
    informational: bytes,
) -> None:
    """A 103 Early Hints (a CDN or proxy in front of the provider) or a 102 before the
    provider's 201: the answer is the 201 with its body, on both paths (http.client took the
    103 for the answer: an accepted document became "unexpected status", unknown, and a
    provider without idempotency got it twice)."""
    answer = informational + b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n" + b'{"id": "9"}'
    direct, session = _both(tmp_path, serve, monkeypatch, lambda raw, n: answer,
                            HttpRequest("POST", "/documents", body=b"doc"))  # fmt: skip
    assert direct == session
    response, error = direct
    assert error is None
    assert (response[0], response[2]) == (201, b'{"id": "9"}')
