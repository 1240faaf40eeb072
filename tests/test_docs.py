"""The documentation runs as written.

- Every ```console block of the walk-through pages is executed, in page order, in an empty
  directory: ``export NAME=VALUE`` sets the environment of what follows, ``docrelay sandbox``
  starts the sandbox in the background (a second terminal, for the reader), and every other
  ``$ docrelay ...`` line must exit with 0, or with the code its comment names
  (``# exit code 1: ...``), without a traceback. A ``{code-block}`` whose caption is a file
  name is written to that file first; every ```python block runs as a script and must stay
  silent on stderr.
- The sandbox's port (8702 on the page) is replaced by a free port, so that parallel runs
  cannot collide; nothing else is changed.
- The Sphinx build (HTML and doctest) passes with warnings as errors, runs more than zero
  doctest examples, and the CLI reference documents every command and option of ``docrelay``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from docrelay.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Pages whose blocks are run, and how many commands each must at least run.
PAGES = {"getting-started.md": 10, "plugins/writing-a-provider.md": 1, "outbox.md": 1}
PAGE_PORT = "8702"
BIN = Path(sys.executable).parent

_FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
_EXIT = re.compile(r"exit code (\d+)")


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def blocks(text: str) -> Iterator[tuple[str, str | None, str]]:
    """(language, caption, body) of every fenced block, in order."""
    for m in _FENCE.finditer(text):
        info, body = m["info"].strip(), m["body"]
        caption = None
        if info.startswith("{code-block}"):
            info = info.removeprefix("{code-block}").strip()
            lines = body.splitlines(keepends=True)
            while lines and lines[0].startswith(":"):
                key, _, value = lines.pop(0)[1:].partition(":")
                if key.strip() == "caption":
                    caption = value.strip()
            body = "".join(lines).lstrip("\n")
        yield info, caption, body


def commands(body: str) -> Iterator[tuple[str, int]]:
    """(command, expected exit code) of every ``$`` line of a console block."""
    for line in body.splitlines():
        if not line.startswith("$ "):
            continue
        command, _, comment = line[2:].partition("  #")
        m = _EXIT.search(comment)
        yield command.strip(), int(m.group(1)) if m else 0


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"the sandbox exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"the sandbox did not listen on port {port}")


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_runs_as_written(page: str, tmp_path: Path) -> None:
    """Every file, command and Python sample of the page, in order, as a reader runs them."""
    port = _free_port()
    text = (DOCS / page).read_text(encoding="utf-8").replace(PAGE_PORT, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("PYTEST_ADDOPTS", None)
    background: list[subprocess.Popen[bytes]] = []
    ran: list[str] = []
    try:
        for lang, caption, body in blocks(text):
            if caption and re.fullmatch(r"[\w./-]+", caption):
                path = tmp_path / caption
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body, encoding="utf-8")
            elif lang == "console":
                for command, expected in commands(body):
                    argv = shlex.split(command)
                    if argv[0] == "export":
                        name, _, value = argv[1].partition("=")
                        env[name] = value
                        continue
                    assert argv[0] == "docrelay", f"{page}: not a docrelay command: {command}"
                    argv[0] = str(BIN / "docrelay")
                    if argv[1:2] == ["sandbox"]:
                        proc = subprocess.Popen(
                            argv,
                            cwd=tmp_path,
                            env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        background.append(proc)
                        _wait_for_port(int(argv[argv.index("--port") + 1]), proc)
                    else:
                        result = subprocess.run(
                            argv,
                            cwd=tmp_path,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=120,
                            check=False,
                        )
                        shown = f"{page}: $ {command}\n{result.stdout[-3000:]}{result.stderr}"
                        assert result.returncode == expected, shown
                        assert "Traceback" not in result.stderr, shown
                    ran.append(command)
            elif lang == "python":
                script = tmp_path / f"sample_{len(ran)}.py"
                script.write_text(body, encoding="utf-8")
                result = subprocess.run(
                    [sys.executable, str(script)],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert result.returncode == 0, f"{page}: python sample\n{result.stderr[-3000:]}"
                assert result.stderr == "", f"{page}: the library wrote to stderr"
                ran.append(f"python {script.name}")
    finally:
        for proc in background:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    assert len(ran) >= PAGES[page], ran


def test_console_parser_reads_exit_codes_and_captions() -> None:
    """The runner's own parsing: captions become files, comments name exit codes."""
    page = (
        "```{code-block} toml\n:caption: docrelay.toml\n\n[store]\n```\n"
        "```console\n$ docrelay status  # exit code 1: rejected\n$ docrelay why X\nout\n```\n"
    )

    found = list(blocks(page))

    assert found[0] == ("toml", "docrelay.toml", "[store]\n")
    assert list(commands(found[1][2])) == [("docrelay status", 1), ("docrelay why X", 0)]


def _cli_names() -> list[str]:
    """Every command and long option of ``docrelay`` (what the CLI reference must show)."""
    names = []
    for group_param in main.params:
        names += [o for o in group_param.opts if o.startswith("--")]
    assert isinstance(main, click.Group)
    for name, command in main.commands.items():
        names.append(name)
        for param in command.params:
            if getattr(param, "hidden", False):  # internal (run --events for --processes)
                continue
            names += [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return names


def test_docs_build_with_warnings_as_errors_and_run_their_examples(tmp_path: Path) -> None:
    """``sphinx-build -W -n`` passes for HTML and doctest; the doctest builder runs real
    examples; docs/cli.md (sphinx-click) documents every command and option."""
    pytest.importorskip("sphinx_click", reason="sphinx-click is not installed (docs extra)")
    sphinx = shutil.which("sphinx-build", path=str(BIN))
    assert sphinx is not None
    for builder in ("html", "doctest"):
        result = subprocess.run(
            [sphinx, "-W", "-n", "-q", "-b", builder, "-d", str(tmp_path / "doctrees"),
             str(DOCS), str(tmp_path / builder)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{builder}:\n{result.stdout[-3000:]}{result.stderr}"

    report = (tmp_path / "doctest" / "output.txt").read_text(encoding="utf-8")
    tests = re.search(r"^\s*(\d+) tests", report, re.M)
    assert tests is not None, report
    assert int(tests.group(1)) > 0
    assert "0 failures in tests" in report
    html = (tmp_path / "html" / "cli.html").read_text(encoding="utf-8")
    missing = [n for n in _cli_names() if n not in html]
    assert missing == []
