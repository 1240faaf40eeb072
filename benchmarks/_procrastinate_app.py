"""The procrastinate side of ``benchmarks.compare --pg``: one task that sends a document.

Workers run as ``procrastinate --app benchmarks._procrastinate_app.app worker``; the database
is ``BENCH_PG_URL`` (the compare harness sets it), the reference server ``BENCH_BASE_URL``.
A 5xx or 429 answer raises, and procrastinate retries the job (3 attempts, exponential wait).
"""

from __future__ import annotations

import os
import threading

import procrastinate

from ._econnect import TokenCache, send_checked, session

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PG_URL", ""))
)

_local = threading.local()
_tokens = TokenCache()


@app.task(
    name="bench_send",
    retry=procrastinate.RetryStrategy(max_attempts=3, exponential_wait=1),
)
def bench_send(key: str, body: str) -> int:
    base = os.environ["BENCH_BASE_URL"]
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = session()
    status = send_checked(s, base, _tokens.get(s, base), key, body.encode())
    if status not in (200, 409):
        raise RuntimeError(f"eConnect answered {status}")
    return status
