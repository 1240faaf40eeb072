"""Shared pieces of the benchmarks: relays, documents, bare clients, machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from docrelay import Document, Relay
from requests.adapters import HTTPAdapter

from ._plugin import API_KEY, BenchProvider, WriteBack, payload


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def rss_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB, from /proc/self/status."""
    cur = peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return cur, peak


def reset_peak_rss() -> None:
    """Reset VmHWM (Linux: write 5 to /proc/self/clear_refs); ignored where not allowed."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def documents(prefix: str, n: int, size: int = 2048) -> list[Document]:
    return [
        Document(
            id=f"{prefix}-{i:07d}",
            provider="bench",
            content_type="application/json",
            payload=payload(i, size),
        )
        for i in range(n)
    ]


class Workdir:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="docrelay-bench-")
        self.path = Path(self._tmp.name)
        self._n = 0

    def db_url(self, name: str | None = None) -> str:
        self._n += 1
        return "sqlite:///" + str(self.path / f"{name or 'run'}-{self._n}.db")

    def cleanup(self) -> None:
        self._tmp.cleanup()


def make_relay(store_url: str, base_url: str, engine: Mapping[str, Any] | None = None) -> Relay:
    return Relay(
        store=store_url,
        providers={"bench": {"base_url": base_url, "api_key": API_KEY}},
        engine=dict(engine or {}),
        plugins=[BenchProvider(), WriteBack()],
    )


def bare_session(pool: int = 1, trust_env: bool = False) -> requests.Session:
    """A bare client. ``trust_env=False`` (as docrelay's own transport): no proxy, netrc or
    CA-bundle lookups in the environment on every request, so the comparison measures
    docrelay's cost and not requests' environment handling; ``True`` is a default Session."""
    s = requests.Session()
    s.trust_env = trust_env
    a = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    s.mount("http://", a)
    return s


def bare_post_all(
    session: requests.Session, url: str, docs: Sequence[Document], keys: Sequence[str]
) -> int:
    """The bare client: one ``Session.post`` per document, reading the answer."""
    ok = 0
    for d, k in zip(docs, keys, strict=True):
        r = session.post(
            url,
            data=d.payload,
            headers={
                "Content-Type": d.content_type,
                "Authorization": "Bearer " + API_KEY,
                "Idempotency-Key": k,
                "X-Trace": "bench",
            },
            timeout=(5, 30),
        )
        r.content  # noqa: B018 - read the body, as docrelay does
        ok += r.status_code == 200
    return ok


def bare_threads(url: str, docs: Sequence[Document], threads: int) -> float:
    """*threads* bare clients (one session each) share *docs*; returns the seconds taken."""
    chunks = [list(docs[i::threads]) for i in range(threads)]
    sessions = [bare_session() for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        barrier.wait()
        bare_post_all(sessions[i], url, chunks[i], [f"bare-{d.id}" for d in chunks[i]])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - started
    for s in sessions:
        s.close()
    return elapsed


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out
