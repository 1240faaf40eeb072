"""docrelay's HTTP call against a bare ``requests.Session.post``, side by side.

Both sides send the eConnect request of ``benchmarks.compare`` (the 4.7 KB UBL invoice, the
bearer token, an ``X-EConnect-DocumentId``) to one reference server (``benchmarks/_server.py``,
its own process), in rounds that alternate the two sides; it prints microseconds per request
of each side per round, their median and the ratio docrelay / bare (below 1.00: docrelay's
call is cheaper). The body of every answer is read on both sides.

    .venv/bin/python -m benchmarks.transport_ab --requests 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from docrelay import Relay
from docrelay._models import HttpRequest

from ._econnect import SEND_PATH, fetch_token, invoice, key_for, provider_settings, send, session
from ._server import ReferenceServer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per side and round")
    ap.add_argument("--rounds", type=int, default=5)
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

        def bare() -> float:
            t0 = time.perf_counter()
            for k in keys:
                r = send(s, base, token, k, body)
                assert r.status_code in (200, 409), r.status_code
            return (time.perf_counter() - t0) / len(keys) * 1e6

        def docrelay() -> float:
            t0 = time.perf_counter()
            for req in requests_:
                response, error = transport.send(rt, req)
                assert error is None, error
                assert response is not None
                assert response.status in (200, 409), response.status
            return (time.perf_counter() - t0) / len(keys) * 1e6

        bare(), docrelay()  # warm up: connections open, code paths loaded
        rows: list[tuple[float, float]] = []
        for i in range(args.rounds):
            pair = (bare(), docrelay()) if i % 2 == 0 else tuple(reversed((docrelay(), bare())))
            rows.append((pair[0], pair[1]))
            print(
                f"round {i + 1}: bare {pair[0]:7.1f} us  docrelay {pair[1]:7.1f} us  "
                f"ratio {pair[1] / pair[0]:.2f}",
                flush=True,
            )
        relay.close()
        s.close()
    b = statistics.median(r[0] for r in rows)
    d = statistics.median(r[1] for r in rows)
    ratio = statistics.median(r[1] / r[0] for r in rows)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"median: bare {b:.1f} us/request, docrelay Transport.send {d:.1f} us/request, "
        f"ratio {ratio:.2f} (per round); load average {load}"
    )


if __name__ == "__main__":
    main()
