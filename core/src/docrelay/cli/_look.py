"""``status``, ``why``, ``requeue`` and ``plugins``: commands that read (and requeue)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from .._models import DocState
from .._redact import redact
from .._relay import DocumentStatus
from .._render import cell, counts_line, detail, status_table, when
from ..exceptions import ConfigError
from ._common import TEXT, exit_code, guard, note, open_relay, out

#: Rows ``status`` prints as a table unless ``--limit`` says otherwise.
DEFAULT_ROWS = 50
REQUEUEABLE = ("failed", "rejected", "held", "unknown")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def print_statuses(statuses: Sequence[DocumentStatus], fmt: str) -> None:
    if fmt == "json":
        click.echo(redact(json.dumps([s.to_dict() for s in statuses], indent=2)))
    elif fmt == "jsonl":
        for s in statuses:
            click.echo(redact(json.dumps(s.to_dict())))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["id", "provider", "kind", "state", "attempts", "provider_ref",
                    "updated_at", "next_attempt_at", "detail"])  # fmt: skip
        for s in statuses:
            due = when(s.next_attempt_at) if s.next_attempt_at else ""
            w.writerow([s.id, s.provider, s.kind, s.state.value, s.attempts,
                        s.provider_ref or "", when(s.updated_at), due, detail(s)])  # fmt: skip
        click.echo(redact(buf.getvalue()), nl=False)
    else:
        out.print(status_table(statuses))


def _since(value: str | None) -> float | None:
    """``90s``, ``15m``, ``2h``, ``7d`` ago, or an ISO date/time (UTC when no zone)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if m:
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since takes 15m, 2h, 7d or an ISO date, not {value!r}") from None
    if dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


_FORMATS = [
    click.option("--json", "fmt", flag_value="json", help="A JSON list."),
    click.option("--jsonl", "fmt", flag_value="jsonl", help="One JSON object a line."),
    click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row."),
]


@click.command()
@click.argument("doc_ids", nargs=-1)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in DocState]),
    help="Only this state (repeatable).",
)
@click.option("--provider", default=None, type=TEXT, help="Only this provider.")
@click.option(
    "--since",
    default=None,
    type=TEXT,
    metavar="WHEN",
    help="Only documents changed since WHEN: 15m, 2h, 7d or an ISO date.",
)
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=None,
    help=f"Rows shown (default {DEFAULT_ROWS} in the table, all in machine output; "
    "0: all). Counts and the exit code cover every match.",
)
@_FORMATS[0]
@_FORMATS[1]
@_FORMATS[2]
@click.pass_context
@guard
def status(ctx: click.Context, doc_ids: tuple[str, ...], states: tuple[str, ...],
           provider: str | None, since: str | None, limit: int | None,
           fmt: str | None) -> None:  # fmt: skip
    """Show counts per provider and state, then the documents (newest change first)."""
    after = _since(since)
    with open_relay(ctx, create_store=False) as relay:
        if doc_ids:
            statuses = [relay.status(i) for i in doc_ids]
        else:
            statuses = relay.statuses(provider=provider)
        paused = relay.paused()
    statuses = [s for s in statuses
                if (not states or s.state.value in states)
                and (provider is None or s.provider == provider)
                and (after is None or s.updated_at >= after)]  # fmt: skip
    if not doc_ids:
        statuses.sort(key=lambda s: s.updated_at, reverse=True)
    rows = limit if limit is not None else (None if fmt else DEFAULT_ROWS)
    shown = statuses[:rows] if rows else statuses
    if fmt:
        print_statuses(shown, fmt)
    else:
        per: dict[str, Counter[str]] = {}
        for s in statuses:
            per.setdefault(s.provider, Counter())[s.state.value] += 1
        for name, counts in sorted(per.items()):
            out.print(f"{name}: {counts_line(counts)}", markup=False)
        if len(per) > 1:
            out.print(f"all: {counts_line(sum(per.values(), Counter()))}", markup=False)
        if not statuses:
            out.print("no documents", markup=False)
        else:
            print_statuses(shown, "table")
        if len(shown) < len(statuses):
            note(f"{len(shown)} of {len(statuses)} rows shown (--limit 0 shows all)")
        for name, (reason, until) in paused.items():
            note(f"provider {name} paused until {when(until) if until else 'a requeue'}: "
                 f"{reason}")  # fmt: skip
    sys.exit(exit_code(statuses))


@click.command()
@click.argument("doc_id", type=TEXT)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@guard
def why(ctx: click.Context, doc_id: str, as_json: bool) -> None:
    """Explain a document: every attempt and outcome, and the next step."""
    with open_relay(ctx, create_store=False) as relay:
        data = relay.explain(doc_id)
        code = exit_code([relay.status(doc_id)])
    if as_json:
        click.echo(redact(json.dumps(data, indent=2, default=str)))
        sys.exit(code)
    st = data["status"]
    out.print(f"[bold]{cell(st['id'])}[/] ({cell(st['provider'])}, {cell(st['kind'])}, "
              f"revision {cell(st['revision'])})")  # fmt: skip
    out.print(f"state: [bold]{cell(st['state'])}[/]  key: {cell(st['key']) or '-'}  provider "
              f"ref: {cell(st['provider_ref']) or '-'}")  # fmt: skip
    out.print(f"attempts: {data['budget']['attempts_used']} of {data['budget']['max_attempts']}")
    out.print(_timeline(data["timeline"]))
    for n in data["notifications"]:
        out.print(
            f"notification at {when(n['received_at'])}: "
            f"{cell((n['outcome'] or {}).get('kind', 'ignored'))} ({cell(n['note']) or 'recorded'})"
        )
    out.print(f"reason: {cell(redact(st['reason'] or '-'))}")
    out.print(f"next step: {cell(redact(data['next_step']))}")
    sys.exit(code)


def _timeline(attempts: list[dict[str, Any]]) -> Table:
    table = Table(title="timeline")
    for col in ("#", "time (UTC)", "action", "request", "status", "outcome", "rule / ids",
                "details"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for a in attempts:
        o = a["outcome"] or {}
        marks = (o.get("rule"), o.get("trace_id") and f"trace={o['trace_id']}",
                 o.get("request_id") and f"request={o['request_id']}")  # fmt: skip
        ids = " ".join(x for x in marks if x)
        details = o.get("message") or ""
        for fe in o.get("field_errors", [])[:5]:
            details += f"\n{fe.get('field') or '-'}: {fe.get('message')}"
        if o.get("error_url"):
            details += f"\n{o['error_url']}"
        if o.get("wait") is not None:
            details += f"\nwait {o['wait']:.1f} s"
        table.add_row(str(a["number"]), when(a["at"]), cell(a["action"]),
                      cell(a["request"]) or "-", str(a["status"] or "-"),
                      cell(o.get("kind", "in flight")), cell(ids),
                      cell(redact(details.strip())))  # fmt: skip
    return table


@click.command()
@click.argument("doc_ids", nargs=-1)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(REQUEUEABLE),
    help="Every document in this state (repeatable).",
)
@click.option("--provider", default=None, type=TEXT, help="Only this provider's documents.")
@click.option("--dry-run", is_flag=True, help="Say what would be requeued; change nothing.")
@click.pass_context
@guard
def requeue(ctx: click.Context, doc_ids: tuple[str, ...], states: tuple[str, ...],
            provider: str | None, dry_run: bool) -> None:  # fmt: skip
    """Send failed, rejected, held or unknown documents again (same key) and resume their
    provider if it was paused: DOC_IDS, `-` for ids on standard input (one a line), or every
    document --state (and --provider) selects."""
    ids = [i for i in doc_ids if i != "-"]
    if "-" in doc_ids:
        ids += [line.strip() for line in sys.stdin if line.strip()]
    if not ids and not states:
        raise ConfigError("give DOC_IDS, `-` (ids on standard input) or --state")
    if ids and (states or provider):
        raise ConfigError("give DOC_IDS or --state/--provider, not both")
    with open_relay(ctx, create_store=False) as relay:
        if states:
            chosen = [s for st in states for s in relay.statuses(state=st, provider=provider)]
        else:
            chosen = [relay.status(i) for i in ids]  # an unknown id: exit 2, nothing changed
        wrong = [s for s in chosen if s.state.value not in REQUEUEABLE]
        if wrong:
            s = wrong[0]
            raise ConfigError(f"{s.id} is {s.state.value}: only {', '.join(REQUEUEABLE)} "
                              "documents are requeued")  # fmt: skip
        if dry_run:
            for s in chosen:
                out.print(f"{s.id}: {s.state.value} (would be requeued)", markup=False)
            note(f"dry run: {len(chosen)} document(s) would be requeued")
            return
        done = relay.requeue_many(s.id for s in chosen)
    for s in done:
        out.print(f"{s.id}: {s.state.value} (next attempt now)", markup=False)
    if states:
        note(f"{len(done)} document(s) requeued")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@guard
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins: name, distribution, version, kind, hook API, status."""
    from .._host import PluginHost
    from ._common import config

    cfg = config(ctx)
    host = PluginHost(enabled=cfg.plugins_enabled, disabled=cfg.plugins_disabled)
    statuses = host.statuses()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
        return
    table = Table()
    for col in ("name", "distribution", "version", "kind", "api", "status", "provider / error"):
        table.add_column(col, overflow="fold")
    for s in statuses:
        table.add_row(s.name, s.distribution or "-", s.version or "-", s.kind,
                      str(s.hook_api or "-"), s.status, s.error or s.provider or "")  # fmt: skip
    out.print(table)
