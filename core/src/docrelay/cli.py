"""The ``docrelay`` command line.

Exit codes: 0 = every document delivered, duplicate or no_action; 1 = some are rejected,
failed or still pending (``accepted`` included: the provider's answer is still to come);
2 = usage, configuration or input error (one line on stderr, nothing half-written in the
store).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from ._config import Config, load_config
from ._logging import configure_logging
from ._models import OK_STATES, DocState, Document, validate_document_id
from ._redact import install_log_redaction, redact
from ._relay import DocumentStatus, Relay
from .exceptions import ConfigError, DocrelayError, DocumentError

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

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


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps whole rows (no 80-column folding); terminals use their width.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, soft_wrap=True, highlight=False, width=width)


out = _console(stderr=False)
err = _console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"docrelay: error: {redact(message)}", markup=False)
    sys.exit(code)


def _guard(fn: F) -> F:
    """One clear line and exit code 2 for every expected error; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DocrelayError as exc:
            _fail(str(exc) or type(exc).__name__)
        except OSError as exc:
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            logging.getLogger("docrelay").debug("internal error", exc_info=True)
            _fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)")

    return wrapper  # type: ignore[return-value]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


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


def status_table(statuses: Sequence[DocumentStatus], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for col in (
        "id",
        "provider",
        "state",
        "outcome",
        "attempts",
        "provider ref",
        "errors / reason",
    ):
        table.add_column(col, overflow="fold")
    colors = {"delivered": "green", "duplicate": "green", "no_action": "cyan",
              "accepted": "cyan", "rejected": "red", "failed": "red", "held": "yellow",
              "retry_wait": "yellow", "unknown": "magenta", "queued": "white",
              "sending": "yellow"}  # fmt: skip
    for s in statuses:
        state = s.state.value
        detail = _errors(s)
        if not detail and (s.state not in OK_STATES or s.state == DocState.ACCEPTED):
            detail = s.reason or ""
        table.add_row(
            s.id,
            s.provider,
            f"[{colors.get(state, 'white')}]{state}[/]",
            s.outcome.kind.value + (f" {s.outcome.status}" if s.outcome.status else "")
            if s.outcome
            else "-",
            str(s.attempts),
            s.provider_ref or "-",
            redact(detail),
        )
    return table


#: What counts as done: ``accepted`` is not (its validation is still to come).
_DONE = OK_STATES - {DocState.ACCEPTED}


def _exit_code(statuses: Sequence[DocumentStatus]) -> int:
    return 0 if all(s.state in _DONE for s in statuses) else 1


class _Progress:
    """A progress bar on stderr while documents settle (only on a terminal)."""

    def __init__(self, relay: Relay, total: int, enabled: bool) -> None:
        self.enabled = enabled and err.is_terminal and total > 0
        self.total = total
        self._done: set[str] = set()
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]delivering"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=err,
                transient=True,
            )
            self._task = self._progress.add_task("", total=total)
            relay.on_change(self._changed)

    def _changed(self, rec: Any, old: str, new: str) -> None:
        if new in ("sending", "retry_wait", "queued"):
            return
        with self._lock:
            self._done.add(rec.id)
            self._progress.update(self._task, completed=len(self._done), description=new)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()


class _Group(click.Group):
    """Usage errors (a missing option, an unknown command, a bad value) are one line on
    stderr and exit code 2, as every other error: no "Usage:" block."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `docrelay` alone: the help, as click prints it
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _fail(exc.format_message() + hint)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: ./docrelay.toml when present).",
)
@click.option("-v", "--verbose", count=True, help="Log more (-vv for debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text, or one JSON object a line.")  # fmt: skip
@click.version_option(package_name="docrelay")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int, log_format: str) -> None:
    """Deliver business documents to B2B provider APIs, exactly once."""
    install_log_redaction()
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if log_format == "json":
        configure_logging(level, "json")
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)  # fmt: skip
    if verbose == 0:
        logging.getLogger("stamina").setLevel(logging.ERROR)
    ctx.obj = {"config_path": config_path}


def _config(ctx: click.Context) -> Config:
    return load_config(ctx.obj["config_path"])


def _relay(config: Config) -> Relay:
    return Relay.from_config(config)


def _parse_meta(values: Sequence[str]) -> dict[str, str]:
    meta = {}
    for v in values:
        if "=" not in v:
            raise ConfigError(f"--meta expects KEY=VALUE, not {v!r}")
        k, _, val = v.partition("=")
        if not k:
            raise ConfigError(f"--meta expects KEY=VALUE, not {v!r}")
        meta[k] = val
    return meta


def _read_document(
    path: Path, doc_id: str, provider: str, kind: str, meta: dict[str, str], limit: int | None
) -> Document:
    if not path.exists():
        raise DocumentError(f"file {str(path)!r} not found")
    if not path.is_file():
        raise DocumentError(f"{str(path)!r} is not a file")
    size = path.stat().st_size
    if limit is not None and size > limit:
        raise DocumentError(
            f"file {str(path)!r} is {size} bytes, over the {provider} limit of {limit} bytes"
        )
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    try:
        validate_document_id(doc_id)
    except ValueError as exc:
        raise DocumentError(str(exc)) from None
    return Document(id=doc_id, provider=provider, kind=kind, payload=payload,
                    content_type=content_type, metadata=meta)  # fmt: skip


@main.command()
@click.option("--provider", required=True, help="Provider name (see `docrelay plugins`).")
@click.option("--env", "env_name", default=None, help="Provider environment.")
@click.option("--base-url", default=None, help="Provider base URL (overrides --env).")
@click.option("--id", "doc_id", default=None, help="Document id (only with one FILE).")
@click.option("--kind", default=None, help="Document kind (default: the provider's first).")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Document metadata.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
@_guard
def send(
    ctx: click.Context,
    provider: str,
    env_name: str | None,
    base_url: str | None,
    doc_id: str | None,
    kind: str | None,
    meta: tuple[str, ...],
    workers: int,
    as_json: bool,
    files: tuple[Path, ...],
) -> None:
    """Store FILEs as documents, deliver until nothing is due now, and print the outcome."""
    for flag, value in (("--provider", provider), ("--env", env_name), ("--base-url", base_url),
                        ("--id", doc_id), ("--kind", kind)):  # fmt: skip
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} needs a value, not an empty one")
    if doc_id is not None and len(files) != 1:
        raise ConfigError("--id needs exactly one FILE")
    if env_name and base_url:
        raise ConfigError("give --env or --base-url, not both")
    config = _config(ctx)
    overrides: dict[str, Any] = {}
    if env_name:
        overrides["env"] = env_name
        overrides["base_url"] = None
    if base_url:
        overrides["base_url"] = base_url
    config = config.with_provider(provider, **overrides)
    metadata = _parse_meta(meta)
    relay = _relay(config)
    with relay:
        info = relay.host.provider(provider)
        rt = relay.engine.runtime(provider)
        kind = kind or info.kinds[0]
        # Read and check every file before the store is touched: all or nothing, and one
        # line for each bad file.
        documents = []
        ids = set()
        problems = []
        # One read for all the files' ids (not one per file): only a stored one can refuse.
        wanted = [f.stem for f in files] if doc_id is None else [doc_id]
        stored = {s.id for s in relay.statuses(ids=wanted)}
        for f in files:
            try:
                d = _read_document(f, f.stem if doc_id is None else doc_id, provider, kind,
                                   metadata, rt.max_payload_bytes)  # fmt: skip
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
                problems.append(f"file {str(f)!r}: {exc}")
                continue
            documents.append(d)
        if problems:
            for line in problems[:-1]:
                err.print(f"docrelay: error: {redact(line)}", markup=False)
            raise DocumentError(problems[-1])
        # New documents in one transaction; a stored one (unchanged or a revision) alone.
        relay.submit_many([d for d in documents if d.id not in stored])
        for d in documents:
            if d.id in stored:
                relay.submit(d)
        with _Progress(relay, len(documents), not as_json):
            relay.run_until_idle(workers=workers, provider=provider)
        statuses = relay.statuses(ids=[d.id for d in documents])
    _print_statuses(statuses, as_json)
    sys.exit(_exit_code(statuses))


def _print_statuses(statuses: Sequence[DocumentStatus], as_json: bool) -> None:
    if as_json:
        click.echo(redact(json.dumps([s.to_dict() for s in statuses], indent=2)))
    else:
        out.print(status_table(statuses))


@main.command()
@click.option("--provider", default=None, help="Only this provider's documents.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--until-idle", is_flag=True, help="Stop when nothing is due now.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus /metrics on this port while running.")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Interface of --metrics-port.")  # fmt: skip
@click.pass_context
@_guard
def run(
    ctx: click.Context,
    provider: str | None,
    workers: int,
    until_idle: bool,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Deliver queued documents (a worker; several may share one store)."""
    relay = _relay(_config(ctx))
    with relay:
        if metrics_port is not None:
            from ._metrics import serve_metrics

            server, _ = serve_metrics(relay, metrics_host, metrics_port)
            err.print(f"docrelay run: metrics on http://{metrics_host}:{server.server_port}"
                      "/metrics", markup=False)  # fmt: skip
        if provider:
            relay.host.provider(provider)
        if until_idle:
            touched: set[str] = set()
            relay.on_change(lambda rec, old, new: touched.add(rec.id))
            n = relay.run_until_idle(workers=workers, provider=provider)
            counts = relay.store.counts()
            err.print(f"processed {n} document(s); " + ", ".join(
                f"{k} {v}" for k, v in sorted(counts.items())), markup=False)  # fmt: skip
            # Exit 1 when a document this run handled ended rejected or failed (cron mails it).
            ended = relay.statuses(ids=sorted(touched)) if touched else []
            bad = [s.id for s in ended if s.state in (DocState.REJECTED, DocState.FAILED)]
            if bad:
                err.print(f"rejected or failed: {', '.join(bad)} (see `docrelay why ID`)",
                          markup=False)  # fmt: skip
            sys.exit(1 if bad else 0)
        stop = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        err.print("docrelay run: delivering; Ctrl-C to stop", markup=False)
        relay.run_forever(workers=workers, provider=provider, stop=stop)


@main.command()
@click.argument("doc_ids", nargs=-1)
@click.option("--state", type=click.Choice([s.value for s in DocState]), default=None)
@click.option("--provider", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def status(
    ctx: click.Context,
    doc_ids: tuple[str, ...],
    state: str | None,
    provider: str | None,
    as_json: bool,
) -> None:
    """Show documents and where they are."""
    relay = _relay(_config(ctx))
    with relay:
        if doc_ids:
            statuses = [relay.status(i) for i in doc_ids]
            if state:
                statuses = [s for s in statuses if s.state.value == state]
        else:
            statuses = relay.statuses(state=state, provider=provider)
        paused = relay.paused()
    _print_statuses(statuses, as_json)
    if paused and not as_json:
        for name, (reason, until) in paused.items():
            err.print(f"provider {name} paused until {_when(until) if until else 'a requeue'}: "
                      f"{redact(reason)}", markup=False)  # fmt: skip
    sys.exit(_exit_code(statuses) if statuses else 0)


def explain(relay: Relay, doc_id: str) -> dict[str, Any]:
    """The timeline of one document, and what happens next (``docrelay why``)."""
    s = relay.status(doc_id)
    history = relay.history(doc_id)
    settings = relay.engine.settings
    paused = relay.paused().get(s.provider)
    if s.state in (DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION):
        next_step = "none: it is final and will never be sent again"
    elif s.state == DocState.REJECTED:
        next_step = "correct the document and submit it again (a new revision, a new round)"
    elif s.state == DocState.FAILED:
        next_step = f"fix the cause, then `docrelay requeue {doc_id}`"
    elif paused:
        next_step = f"provider paused ({paused[0]}); `docrelay requeue {doc_id}` resumes it"
    elif s.next_attempt_at is not None:
        next_step = f"next {'poll' if s.state == DocState.ACCEPTED else 'attempt'} at " + (
            _when(s.next_attempt_at) + " UTC"
        )
    else:
        next_step = s.reason or "waiting"
    return {
        "status": s.to_dict(),
        "budget": {"attempts_used": s.attempts, "max_attempts": settings.max_attempts},
        "next_step": next_step,
        "timeline": [
            {
                "number": a.number,
                "at": a.started_at,
                "action": a.action,
                "request": a.request,
                "status": a.status,
                "outcome": a.outcome.to_dict() if a.outcome else None,
                "duration": a.duration,
                "key": a.key,
            }
            for a in history
        ],
        "notifications": relay.store.notifications(doc_id),
    }


@main.command()
@click.argument("doc_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def why(ctx: click.Context, doc_id: str, as_json: bool) -> None:
    """Explain a document: every attempt and outcome, and the next step."""
    relay = _relay(_config(ctx))
    with relay:
        data = explain(relay, doc_id)
    if as_json:
        click.echo(redact(json.dumps(data, indent=2, default=str)))
        return
    st = data["status"]
    out.print(f"[bold]{st['id']}[/] ({st['provider']}, {st['kind']}, revision {st['revision']})")
    out.print(f"state: [bold]{st['state']}[/]  key: {st['key'] or '-'}  provider ref: "
              f"{st['provider_ref'] or '-'}")  # fmt: skip
    out.print(f"attempts: {data['budget']['attempts_used']} of {data['budget']['max_attempts']}")
    table = Table(title="timeline")
    for col in ("#", "time (UTC)", "action", "request", "status", "outcome", "rule / ids",
                "details"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for a in data["timeline"]:
        o = a["outcome"] or {}
        ids = " ".join(
            x
            for x in (
                o.get("rule"),
                o.get("trace_id") and f"trace={o['trace_id']}",
                o.get("request_id") and f"request={o['request_id']}",
            )
            if x
        )
        details = o.get("message") or ""
        for fe in o.get("field_errors", [])[:5]:
            details += f"\n{fe.get('field') or '-'}: {fe.get('message')}"
        if o.get("error_url"):
            details += f"\n{o['error_url']}"
        if o.get("wait") is not None:
            details += f"\nwait {o['wait']:.1f} s"
        table.add_row(str(a["number"]), _when(a["at"]), a["action"], a["request"] or "-",
                      str(a["status"] or "-"), o.get("kind", "in flight"), ids,
                      redact(details.strip()))  # fmt: skip
    out.print(table)
    for n in data["notifications"]:
        out.print(
            f"notification at {_when(n['received_at'])}: "
            f"{(n['outcome'] or {}).get('kind', 'ignored')} ({n['note'] or 'recorded'})"
        )
    out.print(f"reason: {redact(st['reason'] or '-')}", markup=False)
    out.print(f"next step: {redact(data['next_step'])}", markup=False)


@main.command()
@click.argument("doc_id")
@click.pass_context
@_guard
def requeue(ctx: click.Context, doc_id: str) -> None:
    """Send a failed, rejected, held or unknown document again (same key); resume its
    provider if it was paused."""
    relay = _relay(_config(ctx))
    with relay:
        s = relay.requeue(doc_id)
    out.print(f"{s.id}: {s.state.value} (next attempt now)", markup=False)


@main.command()
@click.option("--host", default=None, help="Interface (default from config, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None)
@click.option(
    "--insecure",
    is_flag=True,
    help="Take notifications of providers without a webhook_secret (loopback only).",
)
@click.pass_context
@_guard
def webhooks(ctx: click.Context, host: str | None, port: int | None, insecure: bool) -> None:
    """Serve provider notifications at POST /webhooks/<provider>/<secret>."""
    from ._serve import make_server
    from ._settings import is_loopback

    config = _config(ctx)
    bind = host or config.webhooks_host
    relay = Relay.from_config(config, insecure_webhooks=insecure)
    with relay:
        takers = [name for name in config.providers
                  if relay.host.provider(name).async_validation == "webhook"
                  or relay.host.hooks(name).implements("parse_notification")]  # fmt: skip
        open_ = [name for name in takers if relay.webhook_secret(name) is None]
        if open_ and not insecure:
            raise ConfigError(
                f"provider(s) {', '.join(open_)} have no webhook_secret: set one as an "
                'environment reference (webhook_secret = "${AQI_WEBHOOK_SECRET}"), or pass '
                "--insecure on a loopback address"
            )
        if insecure and not is_loopback(bind):
            raise ConfigError(f"--insecure is allowed only on a loopback address, not {bind}")
        if insecure:
            err.print("docrelay webhooks: WARNING: --insecure: notifications of "
                      f"{', '.join(open_) or 'providers without a secret'} are taken without "
                      "a secret; anyone who reaches this port can move documents",
                      markup=False)  # fmt: skip
        limits = relay.webhook_settings
        server = make_server(relay.wsgi_app, bind, config.webhooks_port if port is None else port,
                             max_body=limits.max_body_bytes + 1,
                             trusted_proxy=limits.trusted_proxy or None)  # fmt: skip
        err.print(f"docrelay webhooks: listening on http://{bind}:{server.effective_port}"
                  "/webhooks/<provider>/<secret> (waitress)", markup=False)  # fmt: skip
        _print_notification_stats(relay)

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            _print_notification_stats(relay)


def _print_notification_stats(relay: Relay) -> None:
    stats = relay.notification_stats()
    if not stats:
        err.print("notifications: none stored", markup=False)
    for name, st in sorted(stats.items()):
        err.print(f"notifications {name}: {st['stored']} stored, {st['unmatched']} for no known "
                  f"document, {st['dropped']} unmatched dropped (cap "
                  f"{relay.webhook_settings.max_unmatched_per_provider})",
                  markup=False)  # fmt: skip


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins: name, distribution, version, kind, hook API, status."""
    from ._host import PluginHost

    config = load_config(ctx.obj["config_path"])
    host = PluginHost(enabled=config.plugins_enabled, disabled=config.plugins_disabled)
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


@main.command()
@click.argument("name")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default: the port of the provider's sandbox environment).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SPEC",
    help="Fault to inject, e.g. error@0.2, drop*1, throttle@0.05:2, slow@0.1:3.",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sandbox option (values parsed as JSON when they can be).",
)
@click.option("--seed", type=int, default=None, help="Seed for the fault dice.")
@_guard
def sandbox(
    name: str,
    host: str,
    port: int | None,
    faults: tuple[str, ...],
    options: tuple[str, ...],
    seed: int | None,
) -> None:
    """Run provider NAME's sandbox: a local imitation of its API with fault injection."""
    from urllib.parse import urlsplit

    from ._host import PluginHost
    from .sandbox import parse_fault

    h = PluginHost()
    hooks = h.hooks(name)
    cls = hooks.provider_sandbox()
    if cls is None:
        raise ConfigError(f"provider {name} ships no sandbox")
    parsed = []
    for f in faults:
        try:
            parsed.append(parse_fault(f))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    opts: dict[str, Any] = {}
    for o in options:
        k, sep, v = o.partition("=")
        if not sep or not k:
            raise ConfigError(f"--option expects KEY=VALUE, not {o!r}")
        try:
            opts[k] = json.loads(v)
        except ValueError:
            opts[k] = v
    if port is None:
        url = h.provider(name).environments.get("sandbox")
        port = (urlsplit(url).port or 0) if url else 0
    try:
        sb = cls(host=host, port=port, faults=parsed, seed=seed, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    sb.start()
    err.print(f"{name} sandbox on {sb.url} (faults: {', '.join(sb.faults) or 'none'}); "
              "Ctrl-C to stop", markup=False)  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@_guard
def demo(as_json: bool) -> None:
    """Start every provider's sandbox, deliver a sample batch, show every outcome."""
    from ._demo import run_demo

    sys.exit(run_demo(out, err, as_json=as_json))


@main.command("new-plugin")
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: ./docrelay-NAME); must not exist or be empty.",
)
@_guard
def new_plugin(name: str, directory: Path | None) -> None:
    """Write a working provider plugin distribution for the provider NAME: hooks, classifier,
    sandbox, tests (the contract kit included), README, CHANGELOG and a pyproject with the
    entry point. NAME is the provider id: lowercase letters, digits and underscores."""
    from ._scaffold import new_plugin as generate

    target, files = generate(name, directory)
    for f in files:
        out.print(f"wrote {target / f}", markup=False)
    out.print(f"next: pip install -e '{target}[test]' && python -m pytest {target}", markup=False)
