"""The reference server: a small, fast HTTP/1.1 server on 127.0.0.1, in its own process.

Thread per connection, keep-alive, TCP_NODELAY, one ``sendall`` per answer (status line,
headers and body in one write). It answers ``POST /documents`` with 200 ``{"id": ...}`` (409
when the ``Idempotency-Key`` was already taken in), optionally after a delay and with a seeded
share of 503 answers. It also speaks the eConnect PSB send protocol (what
``benchmarks.compare`` uses): ``POST /connect/token`` (client credentials) answers
``{"access_token", "expires_in": 3600, "token_type": "Bearer"}``;
``POST /api/v1/{partyId}/salesInvoice/send`` with that bearer token and an
``X-EConnect-DocumentId`` answers 200 ``{"id": documentId}``, 409 for a documentId it already
has, 401 without the token; the same delay and 503 share apply. Control routes:
``POST /_config`` (JSON: ``delay``, ``fail_ratio``, ``seed``), ``POST /_reset``,
``GET /_stats``. Started by :class:`ReferenceServer` with ``python -m benchmarks._server``.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

#: The access token the reference server hands out at ``/connect/token``.
TOKEN = b"bench-econnect-token-0123456789abcdef"
_TOKEN_ANSWER = json.dumps(
    {"access_token": TOKEN.decode(), "expires_in": 3600, "token_type": "Bearer"}
).encode()


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delay = 0.0
        self.fail_ratio = 0.0
        self.rng = random.Random(1)
        self.seen: set[bytes] = set()
        self.counts: dict[str, int] = {}
        self.seq = 0

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()
            self.counts.clear()

    def answer(
        self,
        method: bytes,
        path: bytes,
        key: bytes | None,
        body: bytes,
        auth: bytes | None = None,
    ) -> tuple[int, bytes]:
        if method == b"POST" and path.startswith(b"/api/v1/") and path.endswith(b"/send"):
            return self._econnect_send(key, auth)
        if path == b"/connect/token" and method == b"POST":
            with self.lock:
                self.counts["token"] = self.counts.get("token", 0) + 1
            return 200, _TOKEN_ANSWER
        if path == b"/documents" and method == b"POST":
            if self.delay:
                time.sleep(self.delay)
            with self.lock:
                self.seq += 1
                if self.fail_ratio and self.rng.random() < self.fail_ratio:
                    status, out = 503, b'{"message": "service unavailable"}'
                elif key is not None and key in self.seen:
                    status, out = 409, b'{"message": "already received"}'
                else:
                    if key is not None:
                        self.seen.add(key)
                    status, out = 200, b'{"id": "d%d"}' % self.seq
                name = str(status)
                self.counts[name] = self.counts.get(name, 0) + 1
            return status, out
        if path == b"/_config" and method == b"POST":
            cfg = json.loads(body or b"{}")
            with self.lock:
                self.delay = float(cfg.get("delay", self.delay))
                self.fail_ratio = float(cfg.get("fail_ratio", self.fail_ratio))
                if "seed" in cfg:
                    self.rng = random.Random(cfg["seed"])
            return 200, b"{}"
        if path == b"/_reset" and method == b"POST":
            self.reset()
            return 200, b"{}"
        if path == b"/_stats":
            with self.lock:
                return 200, json.dumps(self.counts).encode()
        return 404, b'{"message": "no such route"}'

    def _econnect_send(self, key: bytes | None, auth: bytes | None) -> tuple[int, bytes]:
        if auth != b"Bearer " + TOKEN:
            with self.lock:
                self.counts["401"] = self.counts.get("401", 0) + 1
            return 401, b'{"code": "API401", "message": "no valid bearer token"}'
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.seq += 1
            if self.fail_ratio and self.rng.random() < self.fail_ratio:
                status, out = 503, b'{"code": "API503", "message": "service unavailable"}'
            elif key is None:
                status, out = 400, b'{"code": "API400", "message": "no X-EConnect-DocumentId"}'
            elif key in self.seen:
                status, out = 409, b'{"code": "API409", "message": "already received"}'
            else:
                self.seen.add(key)
                status, out = 200, b'{"id": "%s"}' % key
            name = str(status)
            self.counts[name] = self.counts.get(name, 0) + 1
        return status, out


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    409: b"Conflict",
    503: b"Service Unavailable",
}


def _serve_connection(conn: socket.socket, state: _State) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = conn.makefile("rb", buffering=65536)
    try:
        while True:
            line = f.readline(65537)
            if not line or line in (b"\r\n", b"\n"):
                if not line:
                    return
                continue
            first = time.perf_counter()
            method, path, _ = line.split(b" ", 2)
            length, key, auth, close = 0, None, None, False
            while True:
                h = f.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                n = name.strip().lower()
                if n == b"content-length":
                    length = int(value)
                elif n in (b"idempotency-key", b"x-econnect-documentid"):
                    key = value.strip()
                elif n == b"authorization":
                    auth = value.strip()
                elif n == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = f.read(length) if length else b""
            # How long the request took to arrive in full (a body held back by the client's
            # Nagle algorithm shows here), in microseconds, summed per server.
            waited = int((time.perf_counter() - first) * 1e6)
            with state.lock:
                state.counts["request_read_us"] = state.counts.get("request_read_us", 0) + waited
            status, out = state.answer(method, path.split(b"?", 1)[0], key, body, auth)
            conn.sendall(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (status, _REASONS.get(status, b"X"), len(out), out)
            )
            if close:
                return
    except (OSError, ValueError):
        return
    finally:
        f.close()
        conn.close()


def main() -> None:
    state = _State()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    print(srv.getsockname()[1], flush=True)
    # Stop when the parent goes away (stdin closes, also when the parent was killed). Closing
    # the socket from another thread does not wake a blocking accept() on Linux, so the loop
    # wakes every half second to look.
    gone = threading.Event()

    def watch_parent() -> None:
        sys.stdin.read()
        gone.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    srv.settimeout(0.5)
    deadline = time.monotonic() + 3600  # bounded: never outlives an hour
    while not gone.is_set() and time.monotonic() < deadline:
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        conn.settimeout(None)
        with state.lock:
            state.counts["connections"] = state.counts.get("connections", 0) + 1
        threading.Thread(target=_serve_connection, args=(conn, state), daemon=True).start()
    srv.close()


class ReferenceServer:
    """Runs the reference server in a child process (it must not share the client's GIL)."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"
        self._s = requests.Session()

    def configure(self, **cfg: Any) -> None:
        self._s.post(self.url + "/_config", json=cfg, timeout=5).raise_for_status()

    def reset(self) -> None:
        self._s.post(self.url + "/_reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, int]:
        data: dict[str, int] = self._s.get(self.url + "/_stats", timeout=5).json()
        return data

    def close(self) -> None:
        self._s.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ReferenceServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
