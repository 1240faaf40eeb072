"""What every command shares: consoles, errors, exit codes, option types."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from .._config import Config, load_config
from .._models import DocState
from .._redact import redact
from .._relay import DocumentStatus, Relay
from ..exceptions import DocrelayError

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("docrelay.cli")

#: Exit codes, the same for every command (``docrelay --help`` and docs/cli.md show them).
EXIT_OK, EXIT_BAD, EXIT_USAGE, EXIT_PENDING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = (
    (EXIT_OK, "all final and good: delivered, duplicate, no_action"),
    (EXIT_BAD, "some rejected or failed (`docrelay why ID` says why)"),
    (EXIT_PENDING, "some still pending: queued, waiting, held, unknown, accepted"),
    (EXIT_USAGE, "usage or configuration error (one line on stderr)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); the summary is printed first"),
)
EXIT_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {c:<3}  {text}" for c, text in EXIT_CODES)

_GOOD = frozenset({DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION})
_BAD = frozenset({DocState.REJECTED, DocState.FAILED})


def exit_code(statuses: Iterable[DocumentStatus]) -> int:
    """0, 1 or 3 for these documents, as :data:`EXIT_CODES` says."""
    states = {s.state for s in statuses}
    if states & _BAD:
        return EXIT_BAD
    return EXIT_OK if states <= _GOOD else EXIT_PENDING


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps whole rows (no 80-column folding); terminals use their width.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, soft_wrap=True, highlight=False, width=width)


out = _console(stderr=False)
err = _console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"docrelay: error: {redact(message)}", markup=False)
    sys.exit(code)


def note(message: str) -> None:
    """One plain line on stderr."""
    err.print(redact(message), markup=False)


def guard(fn: F) -> F:
    """One clear line and exit code 2 for every expected error; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DocrelayError as exc:
            fail(str(exc) or type(exc).__name__)
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except UnicodeError:
            # Bytes that are not UTF-8 in an argument or on standard input reach Python as
            # surrogates; the store refuses to encode them before anything is written.
            fail("an argument or standard input is not valid UTF-8 text")
        except Exception as exc:
            log.debug("internal error", exc_info=True)
            fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)")

    return wrapper  # type: ignore[return-value]


class NonEmpty(click.ParamType[str]):
    """A text value that is not empty or blank (``--id ""`` is refused, not a default)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("needs a value, not an empty one", param, ctx)
        return value


TEXT = NonEmpty()


def config(ctx: click.Context) -> Config:
    return load_config(ctx.find_root().obj["config_path"])


def open_relay(ctx: click.Context, *, create_store: bool = True, **kwargs: Any) -> Relay:
    """The relay of the configuration; read-only commands pass ``create_store=False``."""
    return Relay.from_config(config(ctx), create_store=create_store, **kwargs)


@functools.cache
def _glibc() -> Any:
    """The C library when it is glibc (``None`` elsewhere: musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname (find_library would run ldconfig)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def few_malloc_arenas(arenas: int = 2) -> None:
    """At most *arenas* glibc malloc arenas for the threads started from now on (unless
    ``MALLOC_ARENA_MAX`` says otherwise): by default every worker thread gets an arena of
    its own, each keeping its freed memory, which made 16 workers' peak memory grow by
    megabytes for nothing. The GIL already serialises most allocations."""
    if os.environ.get("MALLOC_ARENA_MAX") or (libc := _glibc()) is None:
        return
    libc.mallopt(_M_ARENA_MAX, arenas)


def give_back_freed_memory() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; elsewhere nothing):
    after the files' payloads are stored and dropped, before the workers start, so their
    megabytes do not stay counted in the peak of a long send."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


_M_ARENA_MAX = -8  # mallopt parameter of glibc's malloc.h


def verbosity(ctx: click.Context) -> int:
    return int(ctx.find_root().obj.get("verbose", 0))
