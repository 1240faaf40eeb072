"""``docrelay demo``: every provider's sandbox, a sample batch, every outcome once."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ._host import PluginHost
from ._models import DocState, Document, OutcomeKind
from ._relay import DocumentStatus, Relay
from ._render import status_table
from ._serve import WebhookServer, settle
from .sandbox import Sandbox

__all__ = ["DEMO_ENGINE", "EXPECTED", "observed_outcomes", "run_demo"]

#: Engine settings for the demo: real waits, scaled down so it ends in seconds.
DEMO_ENGINE = {
    "retry_wait_initial": 0.2,
    "retry_wait_max": 1.0,
    "retry_wait_jitter": 0.1,
    "retry_after_cap": 5.0,
    "deferral_initial": 1.0,
    "deferral_max": 5.0,
    "poll_initial": 0.3,
    "poll_max": 1.0,
    "held_recheck": 0.5,
    "lease_seconds": 30.0,
    "read_timeout": 5.0,
}

#: The outcomes the demo must show, in the order the issue lists them.
EXPECTED = (
    "delivered",
    "duplicate",
    "no_action",
    "accepted then delivered",
    "accepted then rejected with field errors",
    "throttled then delivered",
    "retried then delivered",
    "rejected with the portal error URL",
    "held then released",
)


def observed_outcomes(
    relay: Relay, statuses: list[DocumentStatus], held: set[str]
) -> dict[str, list[str]]:
    """Which of :data:`EXPECTED` each document shows, judged from the store's records."""
    seen: dict[str, list[str]] = {name: [] for name in EXPECTED}
    for s in statuses:
        kinds = {a.outcome.kind for a in relay.history(s.id) if a.outcome is not None}
        if s.state == DocState.DELIVERED:
            seen["delivered"].append(s.id)
            if OutcomeKind.ACCEPTED in kinds:
                seen["accepted then delivered"].append(s.id)
            if OutcomeKind.THROTTLED in kinds:
                seen["throttled then delivered"].append(s.id)
            if kinds & {OutcomeKind.RETRY, OutcomeKind.UNKNOWN}:
                seen["retried then delivered"].append(s.id)
            if s.id in held:
                seen["held then released"].append(s.id)
        if s.state == DocState.DUPLICATE:
            seen["duplicate"].append(s.id)
        if s.state == DocState.NO_ACTION:
            seen["no_action"].append(s.id)
        if s.state == DocState.REJECTED and s.outcome is not None:
            if OutcomeKind.ACCEPTED in kinds and s.outcome.field_errors:
                seen["accepted then rejected with field errors"].append(s.id)
            if s.outcome.error_url:
                seen["rejected with the portal error URL"].append(s.id)
    return seen


def run_demo(out: Console, err: Console, as_json: bool = False, timeout: float = 45.0) -> int:
    """Run the demo; returns the exit code (0 when every expected outcome was shown)."""
    started = time.monotonic()
    host = PluginHost()
    workdir = Path(tempfile.mkdtemp(prefix="docrelay-demo-"))
    store_url = f"sqlite:///{workdir / 'demo.db'}"
    sandboxes: list[Sandbox] = []
    plans: dict[str, Any] = {}
    # The webhook receiver must exist before the sandboxes learn its URL; it serves the
    # relay made below (the app looks the relay up when a request arrives).
    holder: dict[str, Relay] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return holder["relay"].wsgi_app(environ, start_response)

    server = WebhookServer(app).__enter__()
    try:
        for name in sorted(host.providers):
            hooks = host.hooks(name)
            cls = hooks.provider_sandbox()
            if cls is None:
                continue
            sb = cls().start()
            sandboxes.append(sb)
            batch = hooks.demo_batch(sb, server.url)
            if batch is None:
                continue
            plans[name] = (sb, batch)
        if not plans:
            err.print("docrelay demo: no provider plugin with a demo is installed", markup=False)
            return 2
        relay = Relay(
            store=store_url,
            # The sandboxes run on free ports: the demo points every provider at its own.
            providers={
                name: {**dict(batch.settings), "base_url": sb.url, "env": None}
                for name, (sb, batch) in plans.items()
            },
            engine=DEMO_ENGINE,
            host=host,
        )
        holder["relay"] = relay
        held: set[str] = set()
        relay.on_change(lambda rec, old, new: held.add(rec.id) if new == "held" else None)
        documents: list[Document] = []
        for name, (sb, batch) in plans.items():
            sb.set_faults(batch.faults)
            if not as_json:
                out.print(f"[bold]{name}[/]: sandbox {sb.url}, {len(batch.documents)} "
                          f"document(s)" + (f", faults {', '.join(batch.faults)}"
                                            if batch.faults else ""))  # fmt: skip
            for d in batch.documents:
                relay.submit(d)
                documents.append(d)
        ids = [d.id for d in documents]
        with relay:
            if not as_json and err.is_terminal:
                with err.status("delivering the demo batch..."):
                    statuses = settle(relay, ids, timeout=timeout, workers=1)
            else:
                statuses = settle(relay, ids, timeout=timeout, workers=1)
            seen = observed_outcomes(relay, statuses, held)
            (workdir / "docrelay.toml").write_text(f'[store]\nurl = "{store_url}"\n')
            missing = [name for name in EXPECTED if not seen[name]]
            elapsed = time.monotonic() - started
            if as_json:
                out.print_json(json.dumps({
                    "documents": [s.to_dict() for s in statuses],
                    "outcomes": seen, "missing": missing, "seconds": round(elapsed, 2),
                    "store": store_url,
                }))  # fmt: skip
            else:
                out.print(status_table(statuses, title="docrelay demo"))
                for name in EXPECTED:
                    mark = "[green]✓[/]" if seen[name] else "[red]✗[/]"
                    out.print(f" {mark} {name}: {', '.join(seen[name]) or 'not shown'}")
                out.print(f"\n{len(statuses)} documents in {elapsed:.1f} s; store {workdir}")
                out.print(f"look closer: docrelay --config {workdir / 'docrelay.toml'} why "
                          f"{statuses[0].id}")  # fmt: skip
        return 0 if not missing else 1
    finally:
        server.__exit__()
        for sb in sandboxes:
            sb.stop()
