"""Live progress of ``send`` and ``run``, and the one-line summary of a run."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .._relay import DocumentStatus
from .._render import counts_line
from ._common import err, log

__all__ = ["Tracker", "summary_line"]

_WAITING = frozenset({"retry_wait", "accepted", "held", "queued"})


def summary_line(
    statuses: Iterable[DocumentStatus],
    elapsed: float,
    now: float,
    interrupted: bool = False,
    also: Mapping[str, int] | None = None,
) -> str:
    """``38 delivered, 2 rejected, 1 waiting (next in 40 s) in 12.3 s``: what became of the
    documents this run touched (*also*: documents counted per state, not read back)."""
    statuses = list(statuses)
    counts = Counter(s.state.value for s in statuses)
    counts.update(also or {})
    text = counts_line(counts) or "no documents"
    due = [s.next_attempt_at for s in statuses
           if s.state.value in _WAITING and s.next_attempt_at is not None]  # fmt: skip
    if due:
        text += f" (next in {max(0.0, min(due) - now):.0f} s)"
    text += f" in {elapsed:.1f} s"
    return ("interrupted: " if interrupted else "") + text


class Tracker:
    """Follows the state changes of one run: the latest state of each document it touched,
    a live display on a terminal (counts per state, rate, elapsed, ETA when the total is
    known), and with ``-v`` one log line per change."""

    def __init__(self, total: int | None = None, show: bool = True, verbose: int = 0) -> None:
        self.total = total
        self.verbose = verbose
        self.started = time.monotonic()
        self.states: dict[str, str] = {}
        self.final: set[str] = set()
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None
        if show and err.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns: list[Any] = [SpinnerColumn(), TextColumn("[bold]delivering")]
            if total:
                columns += [BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
            if total:
                columns += [TextColumn("ETA"), TimeRemainingColumn()]
            columns += [TextColumn("{task.fields[counts]}")]
            self._progress = Progress(*columns, console=err, transient=True)
            self._task = self._progress.add_task("", total=total, rate="", counts="")

    def changed(self, status: DocumentStatus, old: str, new: str) -> None:
        """A state change (a :meth:`docrelay.Relay.on_change` listener)."""
        self.event(status.id, status.provider, old, new, status.is_final)

    def event(self, doc_id: str, provider: str, old: str, new: str, final: bool) -> None:
        if self.verbose:
            log.info("%s %s: %s -> %s", provider, doc_id, old, new)
        with self._lock:
            self.states[doc_id] = new
            if final:
                self.final.add(doc_id)
            else:
                self.final.discard(doc_id)
            if self._progress is not None:
                elapsed = max(time.monotonic() - self.started, 1e-6)
                rate = f"{len(self.final) / elapsed:.1f}/s"
                counts = counts_line(Counter(self.states.values()))
                self._progress.update(self._task, completed=len(self.final), rate=rate,
                                      counts=counts)  # fmt: skip

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self) -> Tracker:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
