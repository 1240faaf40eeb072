"""``docrelay send`` and ``docrelay run``: the commands that deliver."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .._models import DocState, Document, validate_document_id
from .._redact import redact
from .._relay import DocumentStatus, Relay
from ..exceptions import ConfigError, DocumentError
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    TEXT,
    exit_code,
    few_malloc_arenas,
    give_back_freed_memory,
    guard,
    note,
    verbosity,
)
from ._look import print_statuses
from ._progress import Tracker, summary_line

CONTENT_TYPES = {
    ".xml": "application/xml",
    ".ubl": "application/xml",
    ".json": "application/json",
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".edi": "application/EDIFACT",
    ".edifact": "application/EDIFACT",
}
#: What ``Path.exists()`` takes for "no such file" (other errors are raised).
_NOT_FOUND = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})
#: A table of more rows than this shows only the documents that are not good.
TABLE_ROWS = 50
_GOOD_STATES = frozenset(s.value for s in (DocState.DELIVERED, DocState.DUPLICATE,
                                          DocState.NO_ACTION))  # fmt: skip


def _parse_meta(values: Sequence[str]) -> dict[str, str]:
    meta = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise ConfigError(f"--meta expects KEY=VALUE, not {v!r}")
        meta[k] = val
    return meta


def _read_payload(path: Path, provider: str, limit: int) -> tuple[bytes, str]:
    if str(path) == "-":
        payload = sys.stdin.buffer.read(limit + 1)
        if len(payload) > limit:
            raise DocumentError(f"standard input is over the {provider} limit of {limit} bytes")
        return payload, ""
    try:
        info = os.stat(path)  # one call for what exists(), is_file() and stat() asked
    except OSError as exc:
        if exc.errno not in _NOT_FOUND:
            raise
        raise DocumentError(f"file {str(path)!r} not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise DocumentError(f"{str(path)!r} is not a file")
    size = info.st_size
    if size > limit:
        raise DocumentError(
            f"file {str(path)!r} is {size} bytes, over the {provider} limit of {limit} bytes"
        )
    try:
        return path.read_bytes(), CONTENT_TYPES.get(path.suffix.lower(), "")
    except OSError as exc:
        raise DocumentError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _documents(relay: Relay, files: Sequence[Path], doc_id: str | None, provider: str,
               kind: str, meta: dict[str, str]) -> tuple[list[Document], set[str]]:  # fmt: skip
    """Read and check every file before the store is touched: all or nothing, and one line
    for each bad file. Returns the documents and the ids of those already stored."""
    info = relay.require(provider)
    limit = relay.payload_limit(provider)
    default_type = info.content_type or "application/octet-stream"
    documents: list[Document] = []
    ids: set[str] = set()
    problems: list[str] = []
    # One read for all the files' ids (not one per file): only a stored one can refuse.
    stored = _stored_ids(relay, files, doc_id)
    for f in files:
        try:
            payload, content_type = _read_payload(f, provider, limit)
            d_id = f.stem if doc_id is None else doc_id
            try:
                validate_document_id(d_id)
            except ValueError as exc:
                raise DocumentError(str(exc)) from None
            d = Document(id=d_id, provider=provider, kind=kind, payload=payload,
                         content_type=content_type or default_type, metadata=meta)  # fmt: skip
        except DocumentError as exc:
            problems.append(str(exc))
            continue
        if d.id in ids:
            problems.append(f"two files give the document id {d.id!r}; use --id")
            continue
        ids.add(d.id)
        try:
            relay.precheck(d) if d.id in stored else relay.check(d)
        except DocumentError as exc:
            where = "standard input" if str(f) == "-" else f"file {str(f)!r}"
            problems.append(f"{where}: {exc}")
            continue
        documents.append(d)
    if problems:
        for line in problems[:-1]:
            note(f"docrelay: error: {line}")
        raise DocumentError(problems[-1])
    return documents, stored


def _stored_ids(relay: Relay, files: Sequence[Path], doc_id: str | None) -> set[str]:
    """The ids among *files*' documents that the store already has (one read)."""
    wanted = [doc_id] if doc_id is not None else [f.stem for f in files if str(f) != "-"]
    return {s.id for s in relay.statuses(ids=wanted)} if wanted else set()


class _Stop:
    """SIGINT and SIGTERM set :attr:`event`: the batch in hand is finished, then the command
    prints its summary. With *force*, a second Ctrl-C stops at once."""

    def __init__(self, force: bool = False) -> None:
        self.event = threading.Event()
        self.force = force
        self.signals: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        if self.force and self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def install(self) -> _Stop:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)
        return self


@click.command(epilog="`-` as FILE reads one document from standard input (with --id).")
@click.option(
    "--provider", required=True, type=TEXT, help="Provider name (see `docrelay plugins`)."
)
@click.option("--env", "env_name", default=None, type=TEXT, help="Provider environment.")
@click.option("--base-url", default=None, type=TEXT, help="Provider base URL (overrides --env).")
@click.option(
    "--id",
    "doc_id",
    default=None,
    type=TEXT,
    help="Document id (only with one FILE; needed for `-`).",
)
@click.option(
    "--kind", default=None, type=TEXT, help="Document kind (default: the provider's first)."
)
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Document metadata.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
@guard
def send(ctx: click.Context, provider: str, env_name: str | None, base_url: str | None,
         doc_id: str | None, kind: str | None, meta: tuple[str, ...], workers: int,
         as_json: bool, files: tuple[Path, ...]) -> None:  # fmt: skip
    """Store FILEs as documents, deliver until nothing is due now, and print the outcome."""
    if doc_id is not None and len(files) != 1:
        raise ConfigError("--id needs exactly one FILE")
    if any(str(f) == "-" for f in files) and (doc_id is None or len(files) != 1):
        raise ConfigError("`-` (standard input) needs --id and no other FILE")
    if env_name and base_url:
        raise ConfigError("give --env or --base-url, not both")
    overrides: dict[str, Any] = {}
    if env_name:
        overrides = {"env": env_name, "base_url": None}
    if base_url:
        overrides["base_url"] = base_url
    from ._common import config as load

    cfg = load(ctx)
    if overrides or provider not in cfg.providers:
        cfg = cfg.with_provider(provider, **overrides)
    metadata = _parse_meta(meta)
    with Relay.from_config(cfg, needs=[provider]) as relay:
        kind = kind or relay.provider_info(provider).kinds[0]
        documents, stored = _documents(relay, files, doc_id, provider, kind, metadata)
        ids = [d.id for d in documents]
        # New documents in one transaction; a stored one (unchanged or a revision) alone.
        new = [d for d in documents if d.id not in stored]
        relay.submit_many(new)
        for d in documents:
            if d.id in stored:
                relay.submit(d)
        # The payloads are in the store now: not held while delivering (memory).
        del documents, new
        give_back_freed_memory()
        few_malloc_arenas()
        stop = _Stop(force=True).install()
        tracker = Tracker(total=len(ids), show=not as_json, verbose=verbosity(ctx))
        relay.on_change(tracker.changed)
        with tracker:
            try:
                relay.run_until_idle(workers=workers, provider=provider, stop=stop.event)
            except KeyboardInterrupt:
                stop.event.set()
        long_table = not as_json and len(ids) > TABLE_ROWS
        statuses, good = _final_statuses(relay, ids, tracker, skip_good=long_table)
    interrupted = bool(stop.signals)
    shown = statuses
    if long_table:
        shown = [s for s in statuses if exit_code([s]) != 0][:TABLE_ROWS]
    print_statuses(shown, "json" if as_json else "table")
    if long_table:
        note(f"{len(ids) - len(shown)} more row(s) not shown (`docrelay status` "
             "filters them: --state, --limit 0)")  # fmt: skip
    note(summary_line(statuses, tracker.elapsed, time.time(), interrupted, also=good))
    sys.exit(EXIT_INTERRUPTED if interrupted else exit_code(statuses))


def _final_statuses(relay: Relay, ids: Sequence[str], tracker: Tracker, *,
                    skip_good: bool) -> tuple[list[DocumentStatus], Counter[str]]:  # fmt: skip
    """The statuses of *ids* after the run, read from the store; with *skip_good*, those the
    run saw committed in a final good state (delivered, duplicate, no action: a state no
    later change of this run leaves) are only counted, per state, not read back: a long
    table shows only the others, and reading 2,000 records with their payloads cost more
    time and memory than the rest of the summary."""
    good: Counter[str] = Counter()
    if not skip_good:
        return relay.statuses(ids=ids), good
    rest = []
    for i in ids:
        state = tracker.states.get(i)
        if state in _GOOD_STATES:
            good[state] += 1
        else:
            rest.append(i)
    return (relay.statuses(ids=rest) if rest else []), good


@click.command()
@click.option("--provider", default=None, type=TEXT, help="Only this provider's documents.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Threads per process.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes on this store, each with its own relay.",
)
@click.option("--until-idle", is_flag=True, help="Stop when nothing is due now.")
@click.option(
    "--events",
    is_flag=True,
    hidden=True,
    help="One JSON line per state change on stdout (for --processes).",
)
@click.option(
    "--until-stdin-closes",
    "watch_stdin",
    is_flag=True,
    hidden=True,
    help="Stop (after the batch in hand) when standard input closes: the parent of a "
    "--processes worker is gone.",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus /metrics on this port (0: any free port).")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True, type=TEXT,
              help="Interface of --metrics-port.")  # fmt: skip
@click.pass_context
@guard
def run(ctx: click.Context, provider: str | None, workers: int, processes: int,
        until_idle: bool, events: bool, watch_stdin: bool = False,
        metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> None:  # fmt: skip
    """Deliver queued documents (a worker; several may share one store). Ctrl-C or SIGTERM
    finishes the batch in hand, prints the summary of this run and exits."""
    from ._common import config as load

    cfg = load(ctx)
    relay = Relay.from_config(cfg, needs=[provider] if provider else list(cfg.providers))
    with relay:
        if metrics_port is not None and not events:
            from .._metrics import serve_metrics

            server, _ = serve_metrics(relay, metrics_host, metrics_port)
            note(f"docrelay run: metrics on http://{metrics_host}:{server.server_port}/metrics")
        if provider:
            relay.require(provider)
        few_malloc_arenas()
        stop = _Stop().install()
        if watch_stdin:
            threading.Thread(target=_stop_at_eof, args=(stop,), daemon=True).start()
        tracker = Tracker(show=not events, verbose=0 if events else verbosity(ctx))
        if events:
            relay.on_change(_print_event)
        else:
            relay.on_change(tracker.changed)
        if processes > 1:
            code = _run_processes(ctx, relay, tracker, stop, provider, workers, processes,
                                  until_idle)  # fmt: skip
            if code == EXIT_USAGE:
                sys.exit(code)
        elif not events and not until_idle:
            note("docrelay run: delivering; Ctrl-C to stop")
        if processes == 1:
            with tracker:
                if until_idle:
                    relay.run_until_idle(workers=workers, provider=provider, stop=stop.event)
                else:
                    relay.run_forever(workers=workers, provider=provider, stop=stop.event)
        if events:
            return
        statuses, good = _final_statuses(relay, sorted(tracker.states), tracker, skip_good=True)
    bad = [s.id for s in statuses if s.state.value in ("rejected", "failed")]
    if bad:
        note(f"rejected or failed: {', '.join(bad[:20])}{' ...' if len(bad) > 20 else ''} "
             "(see `docrelay why ID`)")  # fmt: skip
    note(summary_line(statuses, tracker.elapsed, time.time(), also=good))
    sys.exit(exit_code(statuses))


def _stop_at_eof(stop: _Stop) -> None:
    """Set *stop* once standard input ends. The parent of ``run --processes`` holds the
    other end of this pipe and never writes to it: the end of the input is the end of the
    parent (a SIGKILL, a crash), and its worker processes must not run on unsupervised."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.event.set()


def _print_event(status: DocumentStatus, old: str, new: str) -> None:
    line = json.dumps({"id": status.id, "provider": status.provider, "old": old, "new": new,
                       "final": status.is_final})  # fmt: skip
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _run_processes(ctx: click.Context, relay: Relay, tracker: Tracker, stop: Any,
                   provider: str | None, workers: int, processes: int,
                   until_idle: bool) -> int:  # fmt: skip
    """*processes* children of ``docrelay run --events``, each its own relay on the store;
    their state changes feed *tracker*. A stop signal is passed on to every child."""
    root = ctx.find_root().obj
    argv = [sys.executable, "-m", "docrelay.cli"]
    if root.get("config_path"):
        argv += ["--config", root["config_path"]]
    # The workers log as the parent was asked to (their stderr is the parent's).
    argv += ["--log-format", root.get("log_format") or "text"]
    if root.get("verbose"):
        argv.append("-" + "v" * int(root["verbose"]))
    argv += ["run", "--events", "--until-stdin-closes", "--workers", str(workers)]
    if provider:
        argv += ["--provider", provider]
    if until_idle:
        argv.append("--until-idle")
    # stdin: a pipe the parent never writes to; it closes when the parent ends, however.
    children = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]  # fmt: skip

    def read(child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            try:
                e = json.loads(line)
                tracker.event(e["id"], e["provider"], e["old"], e["new"], bool(e["final"]))
            except (ValueError, KeyError, TypeError):
                note(f"docrelay run: a worker process wrote {redact(line.strip())[:200]!r}")

    readers = [threading.Thread(target=read, args=(c,), daemon=True) for c in children]
    for t in readers:
        t.start()
    if not until_idle:
        note(f"docrelay run: delivering with {processes} processes; Ctrl-C to stop")
    passed = 0
    with tracker:
        while any(c.poll() is None for c in children):
            stop.event.wait(0.2)
            if len(stop.signals) > passed:
                for c in children:
                    if c.poll() is None:
                        c.send_signal(signal.SIGTERM)
                passed = len(stop.signals)
        for t in readers:
            t.join()
    codes = [c.returncode for c in children]
    for c in children:
        if c.returncode not in (0, EXIT_USAGE):
            how = (f"was killed by signal {-c.returncode}" if c.returncode < 0
                   else f"exited with code {c.returncode}")  # fmt: skip
            note(f"docrelay run: WARNING: worker process {c.pid} {how}; its documents in "
                 "flight are taken over by another worker once their lease expires")  # fmt: skip
    return EXIT_USAGE if EXIT_USAGE in codes else 0
