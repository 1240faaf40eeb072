"""B3: SieSmart sandbox with its limit scaled to 100 requests per 2 s (the plugin's
``RateLimit(100, 60)`` overridden by the provider setting ``rate_limit = "100/2"``),
1,000 proposals through one worker. Targets: >= 97% of the limit used, zero 429."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docrelay import Document, Relay

from ._common import Workdir, timed

LIMIT, WINDOW = 100, 2.0
TARGET = 0.97


def _proposals(n: int) -> list[Document]:
    import docrelay_siesmart

    sample = Path(docrelay_siesmart.__file__).parent / "samples" / "proposal-excavator.json"
    base = json.loads(sample.read_text())
    out = []
    for i in range(n):
        data = dict(base, label=f"bench proposal {i:05d}")
        out.append(
            Document(
                id=f"b3-{i:05d}",
                provider="siesmart",
                kind="proposal",
                content_type="application/json",
                payload=json.dumps(data).encode(),
            )
        )
    return out


def run(docs: int = 1000) -> dict[str, Any]:
    from docrelay_siesmart.sandbox import SieSmartSandbox

    work = Workdir()
    sandbox = SieSmartSandbox(rate_limit=LIMIT, rate_window=WINDOW)
    sandbox.start()
    try:
        relay = Relay(
            store=work.db_url("b3"),
            providers={
                "siesmart": {
                    "base_url": sandbox.url,
                    "client_id": sandbox.config["client_id"],
                    "client_secret": sandbox.config["client_secret"],
                    "rate_limit": f"{LIMIT}/{WINDOW:g}",
                }
            },
        )
        relay.submit_many(_proposals(docs))
        dt, _ = timed(relay.run_until_idle)
        counts = relay.store.counts()
        relay.close()
        limited = [
            r for r in sandbox.requests if not r["path"].startswith(("/oauth/", "/_sandbox/"))
        ]
    finally:
        sandbox.stop()
        work.cleanup()
    n429 = sum(1 for r in limited if r["status"] == 429)
    span = limited[-1]["at"] - limited[0]["at"]
    rate = (len(limited) - 1) / span
    used = rate / (LIMIT / WINDOW)
    return {
        "id": "B3",
        "what": "SieSmart sandbox limited to 100 requests / 2 s, 1,000 proposals",
        "documents": docs,
        "final_states": counts,
        "requests": len(limited),
        "responses_429": n429,
        "seconds": round(dt, 2),
        "requests_per_s": round(rate, 2),
        "limit_per_s": LIMIT / WINDOW,
        "figure": round(used, 4),
        "figure_text": f"{used:.1%} of the limit used ({rate:.2f}/s of {LIMIT / WINDOW:g}/s), "
        f"{n429} x 429",
        "target": f">= {TARGET:.0%}, zero 429",
        "pass": used >= TARGET and n429 == 0 and counts.get("delivered", 0) == docs,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
