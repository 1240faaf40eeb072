"""B2: 16 worker threads against 1, the server answering after 20 ms; and 16 workers against
16 bare ``requests`` threads. Targets: >= 12x one worker; >= 0.90 of bare threads."""

from __future__ import annotations

import json
from typing import Any

from ._common import Workdir, bare_threads, documents, make_relay, timed
from ._server import ReferenceServer

DELAY = 0.020
WORKERS = 16
TARGET_SCALE = 12.0
TARGET_BARE = 0.90


def run(rounds: int = 2, one_docs: int = 150, many_docs: int = 1600) -> dict[str, Any]:
    work = Workdir()
    server = ReferenceServer()
    t1 = t16 = tb = 0.0
    n1 = n16 = nb = 0
    try:
        server.configure(delay=DELAY, fail_ratio=0.0)
        relay = make_relay(work.db_url("warm"), server.url)
        relay.submit_many(documents("warm", 40))
        relay.run_until_idle(workers=WORKERS)
        relay.close()
        for r in range(rounds):
            order = ["one", "many", "bare"] if r % 2 == 0 else ["bare", "many", "one"]
            for side in order:
                if side == "bare":
                    docs = documents(f"b2bare{r}", many_docs)
                    dt = bare_threads(server.url + "/documents", docs, WORKERS)
                    tb, nb = tb + dt, nb + len(docs)
                    continue
                n = one_docs if side == "one" else many_docs
                workers = 1 if side == "one" else WORKERS
                relay = make_relay(work.db_url("b2"), server.url)
                relay.submit_many(documents(f"b2{side}{r}", n))
                dt, _ = timed(lambda: relay.run_until_idle(workers=workers))  # noqa: B023
                counts = relay.store.counts()
                relay.close()
                assert counts == {"delivered": n}, counts
                if side == "one":
                    t1, n1 = t1 + dt, n1 + n
                else:
                    t16, n16 = t16 + dt, n16 + n
    finally:
        server.close()
        work.cleanup()
    one, many, bare = n1 / t1, n16 / t16, nb / tb
    scale, vs_bare = many / one, many / bare
    ok = scale >= TARGET_SCALE and vs_bare >= TARGET_BARE
    return {
        "id": "B2",
        "what": f"{WORKERS} workers vs 1 and vs {WORKERS} bare threads, server delay 20 ms",
        "one_worker_docs_per_s": round(one, 1),
        "workers_docs_per_s": round(many, 1),
        "bare_threads_docs_per_s": round(bare, 1),
        "scale": round(scale, 2),
        "vs_bare": round(vs_bare, 3),
        "figure": [round(scale, 2), round(vs_bare, 3)],
        "figure_text": f"{scale:.1f}x one worker; {vs_bare:.3f} of bare threads "
        f"({many:.0f} vs {one:.0f} / {bare:.0f} docs/s)",
        "target": f">= {TARGET_SCALE}x; >= {TARGET_BARE}",
        "pass": ok,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
