"""Tables and one-line texts of document statuses, for the command line and the demo."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from rich.markup import escape
from rich.table import Table

from ._models import OK_STATES, DocState
from ._redact import redact
from ._relay import DocumentStatus

__all__ = ["STATE_WORDS", "cell", "counts_line", "status_table", "when"]

#: How a summary line names each state.
STATE_WORDS = {
    "delivered": "delivered",
    "duplicate": "duplicate",
    "no_action": "no action",
    "accepted": "accepted (answer to come)",
    "rejected": "rejected",
    "failed": "failed",
    "held": "held",
    "retry_wait": "waiting",
    "unknown": "unknown",
    "queued": "queued",
    "sending": "sending",
}
_ORDER = list(STATE_WORDS)
_COLORS = {"delivered": "green", "duplicate": "green", "no_action": "cyan",
           "accepted": "cyan", "rejected": "red", "failed": "red", "held": "yellow",
           "retry_wait": "yellow", "unknown": "magenta", "queued": "white",
           "sending": "yellow"}  # fmt: skip


#: Control characters but the line break: a provider's text must not drive the terminal.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def cell(text: str | None) -> str:
    """*text* (a provider's words, an id) safe to print through rich: its ``[...]`` shown
    as written, not read as markup, and control characters (ESC of a terminal escape
    sequence, BEL, CR) shown as ``\\xNN`` instead of reaching the terminal."""
    if not text:
        return text or ""
    return escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def counts_line(counts: Mapping[str, int]) -> str:
    """``38 delivered, 2 rejected, 1 waiting`` (states in a fixed order, zeros left out)."""
    ordered = sorted(counts, key=lambda s: _ORDER.index(s) if s in _ORDER else len(_ORDER))
    return ", ".join(f"{counts[s]} {STATE_WORDS.get(s, s)}" for s in ordered if counts[s])


def _errors(s: DocumentStatus, limit: int = 3) -> str:
    o = s.outcome
    if o is None:
        return ""
    parts = []
    for fe in o.field_errors[:limit]:
        parts.append(f"{fe.field}: {fe.message}" if fe.field else fe.message)
    if len(o.field_errors) > limit:
        parts.append(f"(+{len(o.field_errors) - limit} more)")
    if not parts and o.message and s.state not in OK_STATES:
        parts.append(o.message)
    if o.error_url and s.state not in OK_STATES:
        parts.append(o.error_url)
    return "; ".join(parts)


def detail(s: DocumentStatus) -> str:
    """The errors or the reason of one document, as the table shows them."""
    text = _errors(s)
    if not text and (s.state not in OK_STATES or s.state == DocState.ACCEPTED):
        text = s.reason or ""
    return redact(text)


def status_table(statuses: Sequence[DocumentStatus], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("id", "provider", "state", "outcome", "attempts", "provider ref",
                "errors / reason"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for s in statuses:
        state = s.state.value
        table.add_row(
            cell(s.id),
            cell(s.provider),
            f"[{_COLORS.get(state, 'white')}]{state}[/]",
            s.outcome.kind.value + (f" {s.outcome.status}" if s.outcome.status else "")
            if s.outcome
            else "-",
            str(s.attempts),
            cell(s.provider_ref) or "-",
            cell(detail(s)),
        )
    return table
