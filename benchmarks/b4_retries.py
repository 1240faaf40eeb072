"""B4: 30% of answers are 503: requests per document, against 1/(1-0.3) and against a bare
client that retries each 503 at once. Target: <= 1.05 x 1/(1-0.3)."""

from __future__ import annotations

import json
import logging
from typing import Any

from ._common import Workdir, bare_session, documents, make_relay, timed
from ._plugin import API_KEY
from ._server import ReferenceServer

FAIL = 0.3
TARGET = 1.05 / (1 - FAIL)
#: Retry waits shortened so the run takes seconds; the number of requests does not depend on them.
ENGINE = {
    "retry_wait_initial": 0.001,
    "retry_wait_max": 0.002,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.01,
    "deferral_max": 0.02,
}


def _bare(url: str, n: int) -> int:
    s = bare_session()
    sent = 0
    for d in documents("b4bare", n):
        while True:
            r = s.post(
                url,
                data=d.payload,
                headers={"Authorization": "Bearer " + API_KEY, "Idempotency-Key": "bare-" + d.id},
                timeout=(5, 30),
            )
            r.content  # noqa: B018
            sent += 1
            if r.status_code != 503:
                break
    s.close()
    return sent


def run(docs: int = 1500) -> dict[str, Any]:
    logging.getLogger("stamina").setLevel(logging.ERROR)  # one log line per retry otherwise
    work = Workdir()
    server = ReferenceServer()
    try:
        server.configure(delay=0.0, fail_ratio=FAIL, seed=4)
        relay = make_relay(work.db_url("b4"), server.url, ENGINE)
        relay.submit_many(documents("b4", docs))
        dt, _ = timed(lambda: relay.run_until_settled(timeout=300))
        stats = server.stats()
        counts = relay.store.counts()
        relay.close()
        relay_requests = sum(stats.values())
        server.reset()
        server.configure(seed=5)
        bare_requests = _bare(server.url + "/documents", docs)
    finally:
        server.close()
        work.cleanup()
    delivered = counts.get("delivered", 0) + counts.get("duplicate", 0)
    per_doc = relay_requests / docs
    observed_fail = stats.get("503", 0) / relay_requests
    return {
        "id": "B4",
        "what": "requests per document with 30% of answers 503",
        "documents": docs,
        "final_states": counts,
        "server_answers": stats,
        "requests_per_doc": round(per_doc, 4),
        "ideal_requests_per_doc": round(1 / (1 - FAIL), 4),
        "ideal_for_observed_503_share": round(1 / (1 - observed_fail), 4),
        "bare_retry_loop_requests_per_doc": round(bare_requests / docs, 4),
        "seconds": round(dt, 2),
        "figure": round(per_doc, 4),
        "figure_text": f"{per_doc:.3f} requests/doc (ideal {1 / (1 - FAIL):.3f}, bare retry "
        f"loop {bare_requests / docs:.3f}); {delivered}/{docs} delivered",
        "target": f"<= {TARGET:.3f}",
        "pass": per_doc <= TARGET and delivered == docs,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
