"""Development sessions for the docrelay monorepo (run ``nox -l`` to list them).

Every session installs from the repository root: ``requirements-dev.txt`` and the
``-e ./core -e ./plugins/NAME`` pairs hold relative paths that pip resolves against the
working directory, and a plugin can only be installed in the same pip command as core (core is
not on PyPI).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]

ROOT = Path(__file__).parent
CORE_PYPROJECT = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())
# The Python versions come from core's trove classifiers, as in stamina.
ALL_SUPPORTED = [
    classifier.rsplit(" ", 1)[-1]
    for classifier in CORE_PYPROJECT["project"]["classifiers"]
    if classifier.startswith("Programming Language :: Python :: 3.")
]
DEFAULT_PYTHON = ALL_SUPPORTED[0]

# Every plugin distribution except the copy-me skeleton, by directory name.
PLUGINS = sorted(
    path.parent.name
    for path in (ROOT / "plugins").glob("*/pyproject.toml")
    if path.parent.name != "_template"
)
# Test-only dependencies of a plugin session (each plugin adds its own through a ``test`` extra).
PLUGIN_TEST_DEPS = ["pytest", "pytest-timeout", "hypothesis"]
# Local distributions a plugin's tests need besides core (none is on PyPI, so they cannot be a
# ``test`` extra): the otel middleware is tested against two providers' sandboxes.
PLUGIN_PEERS = {"otel": ["./plugins/siesmart", "./plugins/ebh"]}


def _src_dirs() -> list[str]:
    """The source roots mypy checks: core's and every plugin's, the template's included."""
    plugins = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "plugins").glob("*/src"))
    return ["core/src", *plugins]


def _plugin_requirement(plugin: str) -> str:
    """``./plugins/NAME``, with ``[test]`` when the plugin declares a ``test`` extra."""
    pyproject = tomllib.loads((ROOT / "plugins" / plugin / "pyproject.toml").read_text())
    extras = pyproject.get("project", {}).get("optional-dependencies", {})
    return f"./plugins/{plugin}[test]" if "test" in extras else f"./plugins/{plugin}"


@nox.session(python=ALL_SUPPORTED)
def tests(session: nox.Session) -> None:
    """Everything: core, every plugin and the cross-distribution tests, on two workers.

    Arguments after ``--`` replace the default ``-n 2`` and go to pytest.
    """
    session.install("-r", "requirements-dev.txt")
    posargs = session.posargs or ["-n", "2"]
    session.run("python", "-m", "pytest", *posargs)


@nox.session(python=DEFAULT_PYTHON)
def tests_core(session: nox.Session) -> None:
    """Core's own tests with nothing but core and the test-only Acme provider installed."""
    session.install("-e", "./core[postgres]", "-e", "./tests/acme", *PLUGIN_TEST_DEPS)
    session.run("python", "-m", "pytest", "core/tests", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("plugin", PLUGINS)
def tests_plugin(session: nox.Session, plugin: str) -> None:
    """One plugin's tests (its contract suite included) with only core and that plugin."""
    peers = [arg for peer in PLUGIN_PEERS.get(plugin, []) for arg in ("-e", peer)]
    session.install("-e", "./core", "-e", _plugin_requirement(plugin), *peers, *PLUGIN_TEST_DEPS)
    session.run("python", "-m", "pytest", f"plugins/{plugin}", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: the linter and the formatter (check only; run ``ruff format`` to fix)."""
    session.install("ruff")
    session.run("ruff", "check", *(session.posargs or ["."]))
    session.run("ruff", "format", "--check", *(session.posargs or ["."]))


@nox.session(python=DEFAULT_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy strict over core, every plugin (the template included) and tests/typing."""
    session.install("-r", "requirements-dev.txt")
    src = _src_dirs()
    session.run(
        "mypy",
        *src,
        "tests/acme/src",
        "tests/typing",
        env={"MYPYPATH": os.pathsep.join(src)},
    )


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors, then run its doctest examples (the
    docstrings of docrelay.helpers and others; tests/test_docs.py runs the pages' commands
    and Python samples)."""
    session.install("-r", "requirements-dev.txt", "sphinx-click>=6.0")
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build",
            "-W",
            "-n",
            "--keep-going",
            "-b",
            builder,
            "-d",
            "docs/_build/doctrees",
            "docs",
            f"docs/_build/{builder}",
        )
