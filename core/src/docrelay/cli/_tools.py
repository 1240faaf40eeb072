"""``webhooks``, ``sandbox``, ``demo`` and ``new-plugin``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from .._relay import Relay
from ..exceptions import ConfigError
from ._common import TEXT, config, err, guard, note, out


@click.command()
@click.option("--host", default=None, type=TEXT, help="Interface (default from config, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None)
@click.option(
    "--insecure",
    is_flag=True,
    help="Take notifications of providers without a webhook_secret (loopback only).",
)
@click.pass_context
@guard
def webhooks(ctx: click.Context, host: str | None, port: int | None, insecure: bool) -> None:
    """Serve provider notifications at POST /webhooks/<provider>/<secret>."""
    from .._serve import make_server
    from .._settings import is_loopback

    cfg = config(ctx)
    bind = host or cfg.webhooks_host
    with Relay.from_config(cfg, insecure_webhooks=insecure) as relay:
        takers = relay.webhook_providers()
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
            note("docrelay webhooks: WARNING: --insecure: notifications of "
                 f"{', '.join(open_) or 'providers without a secret'} are taken without "
                 "a secret; anyone who reaches this port can move documents")  # fmt: skip
        limits = relay.webhook_settings
        server = make_server(relay.wsgi_app, bind, cfg.webhooks_port if port is None else port,
                             max_body=limits.max_body_bytes + 1,
                             trusted_proxy=limits.trusted_proxy or None)  # fmt: skip
        note(f"docrelay webhooks: listening on http://{bind}:{server.effective_port}"
             "/webhooks/<provider>/<secret> (waitress)")  # fmt: skip
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
        note("notifications: none stored")
    for name, st in sorted(stats.items()):
        note(f"notifications {name}: {st['stored']} stored, {st['unmatched']} for no known "
             f"document, {st['dropped']} unmatched dropped (cap "
             f"{relay.webhook_settings.max_unmatched_per_provider})")  # fmt: skip


@click.command()
@click.argument("name", type=TEXT)
@click.option("--host", default="127.0.0.1", show_default=True, type=TEXT)
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
@guard
def sandbox(name: str, host: str, port: int | None, faults: tuple[str, ...],
            options: tuple[str, ...], seed: int | None) -> None:  # fmt: skip
    """Run provider NAME's sandbox: a local imitation of its API with fault injection."""
    from urllib.parse import urlsplit

    from .._host import PluginHost
    from ..sandbox import parse_fault

    h = PluginHost()
    cls = h.hooks(name).provider_sandbox()
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
    note(f"{name} sandbox on {sb.url} (faults: {', '.join(sb.faults) or 'none'}); "
         "Ctrl-C to stop")  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@guard
def demo(as_json: bool) -> None:
    """Start every provider's sandbox, deliver a sample batch, show every outcome."""
    from .._demo import run_demo

    sys.exit(run_demo(out, err, as_json=as_json))


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: ./docrelay-NAME); must not exist or be empty.",
)
@guard
def new_plugin(name: str, directory: Path | None) -> None:
    """Write a working provider plugin distribution for the provider NAME: hooks, classifier,
    sandbox, tests (the contract kit included), README, CHANGELOG and a pyproject with the
    entry point. NAME is the provider id: lowercase letters, digits and underscores."""
    from .._scaffold import new_plugin as generate

    target, files = generate(name, directory)
    for f in files:
        out.print(f"wrote {target / f}", markup=False)
    out.print(f"next: pip install -e '{target}[test]' && python -m pytest {target}", markup=False)
