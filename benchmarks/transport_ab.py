"""docrelay's HTTP call against a bare ``requests.Session.post``, side by side.

Both sides send the eConnect request of ``benchmarks.compare`` (the 4.7 KB UBL invoice, the
bearer token, an ``X-EConnect-DocumentId``) to one reference server (``benchmarks/_server.py``,
its own process), in rounds that alternate the two sides; it prints, per request, the wall
time and the client's own CPU time (``time.thread_time``: the work of the HTTP client, which
the load of a shared machine moves much less than the wall time) of each side per round, the
medians and the ratios docrelay / bare (below 1.00: docrelay's call is cheaper). The body of
every answer is read on both sides.

    .venv/bin/python -m benchmarks.transport_ab --requests 500 --rounds 10
    git show main:core/src/docrelay/_transport.py > /tmp/transport_before.py
    .venv/bin/python -m benchmarks.transport_ab --before /tmp/transport_before.py

With ``--before FILE`` (another version of ``core/src/docrelay/_transport.py``) a third side
sends with that version's ``Transport``, in the same rounds: before and after under the same
load.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from docrelay import Relay
from docrelay._models import HttpRequest

from ._econnect import SEND_PATH, fetch_token, invoice, key_for, provider_settings, send, session
from ._server import ReferenceServer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500, help="requests per side and round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--before", type=Path, help="another _transport.py to measure alongside")
    args = ap.parse_args(argv)
    body = invoice("INV-AB-000001")
    with ReferenceServer() as server, tempfile.TemporaryDirectory() as tmp:
        base = server.url
        s = session()
        token = fetch_token(s, base)
        relay = Relay(
            f"sqlite:///{Path(tmp) / 'ab.db'}",
            providers={"econnect": provider_settings(base)},
        )
        rt = relay.engine.runtime("econnect")
        transport = relay.engine.transport
        keys = [key_for(f"ab-{i:06d}") for i in range(args.requests)]
        requests_ = [
            HttpRequest(
                "POST",
                SEND_PATH,
                body=body,
                headers={
                    "Content-Type": "application/xml",
                    "Accept": "application/json",
                    "X-EConnect-DocumentId": k,
                    "Authorization": "Bearer " + token,
                },
            )
            for k in keys
        ]

        def bare() -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.thread_time()
            for k in keys:
                r = send(s, base, token, k, body)
                assert r.status_code in (200, 409), r.status_code
            n = len(keys) / 1e6
            return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n

        def docrelay(transport: Any = transport) -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.thread_time()
            for req in requests_:
                response, error = transport.send(rt, req)
                assert error is None, error
                assert response is not None
                assert response.status in (200, 409), response.status
            n = len(keys) / 1e6
            return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n

        sides: dict[str, Any] = {"bare": bare, "docrelay": docrelay}
        if args.before is not None:
            spec = importlib.util.spec_from_file_location("docrelay._transport_before", args.before)
            assert spec is not None
            assert spec.loader is not None
            old = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(old)
            before = old.Transport(transport.deadline)
            sides["before"] = lambda: docrelay(before)
        for side in sides.values():
            side()  # warm up: connections open, code paths loaded
        rows: list[dict[str, tuple[float, float]]] = []
        names = list(sides)
        for i in range(args.rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            row = {name: sides[name]() for name in order}
            rows.append(row)
            print(
                f"round {i + 1:2}: "
                + "  ".join(
                    f"{n} {row[n][0]:6.1f} us ({row[n][0] / row['bare'][0]:.2f}) "
                    f"cpu {row[n][1]:6.1f} ({row[n][1] / row['bare'][1]:.2f})"
                    for n in names
                ),
                flush=True,
            )
        relay.close()
        s.close()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    for j, what in ((0, "wall"), (1, "client CPU")):
        print(
            f"median {what} per request (ratio to bare, median of the rounds' ratios): "
            + ", ".join(
                f"{n} {statistics.median(r[n][j] for r in rows):.1f} us "
                f"({statistics.median(r[n][j] / r['bare'][j] for r in rows):.2f})"
                for n in names
            )
        )
    print(f"load average {load}")


if __name__ == "__main__":
    main()
