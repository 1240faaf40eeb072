"""The ``docrelay`` command line.

Every command follows one exit-code table (:data:`EXIT_CODES`, shown by ``docrelay --help``
and docs/cli.md). Global options (:data:`GLOBAL_OPTIONS`) are taken before or after the
subcommand.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from .._logging import configure_logging
from .._redact import install_log_redaction
from ._common import EXIT_CODES, EXIT_EPILOG, EXIT_INTERRUPTED, exit_code, fail
from ._deliver import run, send
from ._look import plugins, requeue, status, why
from ._tools import demo, new_plugin, sandbox, webhooks

__all__ = ["EXIT_CODES", "GLOBAL_OPTIONS", "exit_code", "main"]

#: Options of ``docrelay`` itself, accepted anywhere on the line: name -> takes a value.
GLOBAL_OPTIONS = {"--config": True, "--verbose": False, "--log-format": True}
_VERBOSE = re.compile(r"-v+")


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move :data:`GLOBAL_OPTIONS` (and ``-v``, ``-vv``) given after the subcommand to the
    front, so ``docrelay status --config x.toml -v`` is ``docrelay --config x.toml -v status``.
    Nothing after ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        name = a.split("=", 1)[0]
        if a == "--":
            rest.extend(args[i:])
            break
        if name in GLOBAL_OPTIONS and GLOBAL_OPTIONS[name] and "=" not in a:
            front.extend(args[i : i + 2])
            i += 2
            continue
        if name in GLOBAL_OPTIONS or _VERBOSE.fullmatch(a):
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


class _Group(click.Group):
    """Usage errors (a missing option, an unknown command, a bad value) are one line on
    stderr and exit code 2, as every other error: no "Usage:" block."""

    def main(self, args: Sequence[str] | None = None, *a: Any, **kwargs: Any) -> Any:
        args = hoist_global_options(sys.argv[1:] if args is None else list(args))
        if kwargs.get("standalone_mode", True) is False:
            return super().main(args, *a, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(args, *a, **kwargs)
        except click.exceptions.Abort:
            fail("interrupted", EXIT_INTERRUPTED)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `docrelay` alone: the help, as click prints it
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            fail(exc.format_message() + hint)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, epilog=EXIT_EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: $DOCRELAY_CONFIG, else ./docrelay.toml when present).",
)
@click.option("-v", "--verbose", count=True,
              help="Log more: one line per state change (-vv for debug).")  # fmt: skip
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
    ctx.obj = {"config_path": config_path, "verbose": verbose, "log_format": log_format}


for _command in (send, run, status, why, requeue, webhooks, plugins, sandbox, demo, new_plugin):
    _command.epilog = "\b\n" + "\n".join(
        filter(None, [(_command.epilog or "").strip(), EXIT_EPILOG.removeprefix("\b\n")])
    )
    main.add_command(_command)
