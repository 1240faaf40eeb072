"""B5: 1,000,000 queued documents (2 KB payloads) in SQLite.

- enqueue rate through ``Relay.submit_many`` in batches of 5,000 (target >= 20,000 docs/s);
- time to claim the next due batch (``batch_size`` 8) in a store of 10,000 against one of
  1,000,000, claims alternating between the two (target: within 2x);
- peak memory growth of the process while enqueueing and claiming (target < 50 MB; RSS
  from /proc/self/status, peak = VmHWM reset after setup).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

from docrelay import Document

from ._common import Workdir, make_relay, reset_peak_rss, rss_kb
from ._plugin import payload

BATCH = 5000
TARGET_RATE = 20_000
TARGET_CLAIM = 2.0
TARGET_MB = 50.0


def _batch(prefix: str, start: int, n: int, body: bytes) -> list[Document]:
    return [
        Document(
            id=f"{prefix}-{i:07d}",
            provider="bench",
            content_type="application/json",
            payload=body,
        )
        for i in range(start, start + n)
    ]


def run(total: int = 1_000_000, small: int = 10_000, claims: int = 300) -> dict[str, Any]:
    work = Workdir()
    try:
        big_relay = make_relay(work.db_url("b5big"), "http://127.0.0.1:9")
        small_relay = make_relay(work.db_url("b5small"), "http://127.0.0.1:9")
        bodies = [payload(i, 2048) for i in range(16)]
        first = _batch("warm", 0, 10, bodies[0])
        big_relay.submit_many(first)  # connections and statements ready
        small_relay.submit_many(_batch("warm", 0, 10, bodies[0]))
        base_rss, _ = rss_kb()
        reset_peak_rss()
        enqueue_s = 0.0
        done = 0
        i = 0
        while done < total:
            n = min(BATCH, total - done)
            docs = _batch("b5", done, n, bodies[i % len(bodies)])
            t = time.perf_counter()
            big_relay.submit_many(docs)
            enqueue_s += time.perf_counter() - t
            done += n
            i += 1
        for start in range(0, small, BATCH):
            small_relay.submit_many(_batch("b5s", start, min(BATCH, small - start), bodies[0]))
        # Claim the next due batch, alternating between the stores (noise cancels out).
        now = time.time() + 1
        t_small: list[float] = []
        t_big: list[float] = []
        for k in range(claims):
            pair = [(small_relay, t_small), (big_relay, t_big)]
            for relay, out in pair if k % 2 == 0 else reversed(pair):
                t = time.perf_counter()
                got = relay.store.claim("bench-claimer", now, 60.0, 8)
                out.append(time.perf_counter() - t)
                assert len(got) == 8
        cur_rss, peak_rss = rss_kb()
        size_mb = sum(os.path.getsize(p) for p in work.path.glob("b5big-*.db*")) / 1e6
        big_relay.close()
        small_relay.close()
    finally:
        work.cleanup()
    rate = total / enqueue_s
    c_small, c_big = statistics.median(t_small), statistics.median(t_big)
    claim_ratio = c_big / c_small
    growth_mb = (peak_rss - base_rss) / 1024
    ok = rate >= TARGET_RATE and claim_ratio <= TARGET_CLAIM and growth_mb < TARGET_MB
    return {
        "id": "B5",
        "what": "1,000,000 queued 2 KB documents in SQLite",
        "documents": total,
        "store_mb": round(size_mb, 1),
        "enqueue_docs_per_s": round(rate),
        "claim_ms_at_10k": round(c_small * 1e3, 3),
        "claim_ms_at_1m": round(c_big * 1e3, 3),
        "claim_ratio": round(claim_ratio, 2),
        "rss_base_mb": round(base_rss / 1024, 1),
        "rss_peak_mb": round(peak_rss / 1024, 1),
        "rss_end_mb": round(cur_rss / 1024, 1),
        "peak_growth_mb": round(growth_mb, 1),
        "figure": [round(rate), round(claim_ratio, 2), round(growth_mb, 1)],
        "figure_text": f"{rate:,.0f} docs/s enqueued; claim {c_big * 1e3:.2f} ms at 1M vs "
        f"{c_small * 1e3:.2f} ms at 10k ({claim_ratio:.2f}x); peak memory +{growth_mb:.1f} MB",
        "target": f">= {TARGET_RATE:,} docs/s; <= {TARGET_CLAIM}x; < {TARGET_MB:.0f} MB",
        "pass": ok,
    }


if __name__ == "__main__":
    print(json.dumps(run(int(os.environ.get("B5_DOCS", "1000000"))), indent=2))
