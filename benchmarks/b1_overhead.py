"""B1: documents per second through docrelay (SQLite store, all hooks, one worker) against a
bare ``requests.Session.post`` loop to the same reference server. Target: >= 0.90."""

from __future__ import annotations

import os
from typing import Any

from ._common import Workdir, bare_post_all, bare_session, documents, make_relay, timed
from ._server import ReferenceServer

TARGET = 0.90


def run(rounds: int = 5, per_round: int = 400) -> dict[str, Any]:
    work = Workdir()
    server = ReferenceServer()
    try:
        server.configure(delay=0.0, fail_ratio=0.0)
        url = server.url + "/documents"
        # Warm up both sides (connections, imports, plugin discovery).
        relay = make_relay(work.db_url("warm"), server.url)
        relay.submit_many(documents("warm", 50))
        relay.run_until_idle()
        relay.close()
        s = bare_session()
        sd = bare_session(trust_env=True)
        warm = documents("warmbare", 50)
        bare_post_all(s, url, warm, [d.id for d in warm])
        bare_post_all(sd, url, warm, [d.id + "d" for d in warm])
        t_bare = t_relay = t_default = 0.0
        n_bare = n_relay = n_default = 0
        ratios = []
        for r in range(rounds):
            docs = documents(f"b1r{r}", per_round)
            relay = make_relay(work.db_url("b1"), server.url)
            relay.submit_many(docs)
            keys = [f"bare-{d.id}" for d in docs]
            sides = ["bare", "relay", "default"] if r % 2 == 0 else ["default", "relay", "bare"]
            round_t = {}
            for side in sides:
                if side == "default":
                    dkeys = [f"default-{d.id}" for d in docs]
                    dt, ok = timed(lambda: bare_post_all(sd, url, docs, dkeys))  # noqa: B023
                    assert ok == len(docs), ok
                    t_default, n_default = t_default + dt, n_default + len(docs)
                elif side == "bare":
                    dt, ok = timed(lambda: bare_post_all(s, url, docs, keys))  # noqa: B023
                    assert ok == len(docs), ok
                    t_bare, n_bare = t_bare + dt, n_bare + len(docs)
                    round_t["bare"] = dt
                else:
                    dt, _ = timed(relay.run_until_idle)
                    counts = relay.store.counts()
                    assert counts == {"delivered": len(docs)}, counts
                    t_relay, n_relay = t_relay + dt, n_relay + len(docs)
                    round_t["relay"] = dt
            ratios.append(round_t["bare"] / round_t["relay"])
            relay.close()
        s.close()
        sd.close()
    finally:
        server.close()
        work.cleanup()
    bare_rate = n_bare / t_bare
    relay_rate = n_relay / t_relay
    default_rate = n_default / t_default
    ratio = relay_rate / bare_rate
    return {
        "id": "B1",
        "what": "docrelay (SQLite, 1 worker) vs bare requests.Session.post (trust_env off), docs/s",
        "bare_docs_per_s": round(bare_rate, 1),
        "docrelay_docs_per_s": round(relay_rate, 1),
        "bare_default_session_docs_per_s": round(default_rate, 1),
        "vs_default_session": round(relay_rate / default_rate, 3),
        "per_round_ratios": [round(x, 3) for x in ratios],
        "overhead_us_per_doc": round((1 / relay_rate - 1 / bare_rate) * 1e6, 1),
        "documents_per_side": n_relay,
        "rounds": rounds,
        "figure": round(ratio, 3),
        "figure_text": f"{ratio:.3f} of bare ({relay_rate:.0f} vs {bare_rate:.0f} docs/s; "
        f"{relay_rate / default_rate:.3f} of a default Session at {default_rate:.0f})",
        "target": f">= {TARGET}",
        "pass": ratio >= TARGET,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(int(os.environ.get("B1_ROUNDS", "5"))), indent=2))
