"""The repository's packaging rules: every distribution complete, every plugin installable and
discoverable, the public API of ``docrelay`` exported on purpose."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
import types
import zipfile
from pathlib import Path
from typing import Any

import docrelay
import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIRS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
PROVIDER_DIRS = [p for p in PLUGIN_DIRS if p.name != "_template"]
DISTRIBUTIONS = [ROOT / "core", *PLUGIN_DIRS]


def _pyproject(dist: Path) -> dict[str, Any]:
    return tomllib.loads((dist / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_lines() -> list[str]:
    lines = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _provider_id(dist: Path) -> str:
    """The entry point name a plugin directory must declare (``_template`` -> ``template``)."""
    return dist.name.lstrip("_")


def test_there_are_provider_plugins() -> None:
    """The parametrized tests below must not pass vacuously."""
    assert len(PROVIDER_DIRS) >= 1


@pytest.mark.parametrize("plugin", PROVIDER_DIRS, ids=lambda p: p.name)
def test_every_plugin_is_in_requirements_dev(plugin: Path) -> None:
    """``requirements-dev.txt`` installs every plugin, editable, in the one command."""
    editable = {
        re.sub(r"\[.*\]$", "", line.removeprefix("-e").strip())
        for line in _requirement_lines()
        if line.startswith("-e")
    }

    assert f"./plugins/{plugin.name}" in editable


def test_requirements_dev_installs_core_and_only_existing_paths() -> None:
    """Core is installed editable, and no line points at a directory that does not exist."""
    paths = [
        re.sub(r"\[.*\]$", "", line.removeprefix("-e").strip())
        for line in _requirement_lines()
        if line.startswith("-e")
    ]

    assert "./core" in paths
    assert [p for p in paths if not (ROOT / p / "pyproject.toml").is_file()] == []


def test_requirements_dev_has_no_pins() -> None:
    """Lower bounds only: a pin in the shared dev install would hide incompatibilities."""
    pinned = [line for line in _requirement_lines() if "==" in line or "<" in line]

    assert pinned == []


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda p: p.name)
def test_distribution_has_readme_changelog_and_types(dist: Path) -> None:
    """Each distribution ships a README, a Keep a Changelog file with ``## Unreleased``, and
    ``py.typed`` in its package."""
    project = _pyproject(dist)["project"]
    package = project["name"].replace("-", "_")
    changelog = dist / "CHANGELOG.md"

    assert (dist / "README.md").is_file()
    assert changelog.is_file()
    assert "## Unreleased" in changelog.read_text(encoding="utf-8").splitlines()
    assert (dist / "src" / package / "py.typed").is_file()


@pytest.mark.parametrize("plugin", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_entry_point_is_named_after_its_directory(plugin: Path) -> None:
    """``docrelay-NAME`` declares the entry point ``NAME = "docrelay_NAME"`` in the group
    ``docrelay.plugins`` (or an object of that module, ``"docrelay_NAME:default"``), and
    depends on docrelay with a major-version bound."""
    project = _pyproject(plugin)["project"]
    name = _provider_id(plugin)

    assert f"docrelay-{name}" == project["name"]
    entry = project["entry-points"]["docrelay.plugins"]
    assert list(entry) == [name]
    assert entry[name].partition(":")[0] == f"docrelay_{name}"
    assert any(re.match(r"^docrelay\s*>=.*,\s*<", dep) for dep in project["dependencies"])


def test_installed_plugins_are_discoverable() -> None:
    """Every provider plugin of the repository is installed and found through its entry point."""
    found = {ep.name for ep in importlib.metadata.entry_points(group="docrelay.plugins")}

    assert {_provider_id(p) for p in PROVIDER_DIRS} <= found


def test_version_is_the_installed_metadata() -> None:
    """``docrelay.__version__`` is served from the installed distribution's metadata."""
    assert importlib.metadata.version("docrelay") == docrelay.__version__


def test_unknown_attribute_raises_attribute_error() -> None:
    """The module ``__getattr__`` serves ``__version__`` only."""
    with pytest.raises(AttributeError, match="no_such_thing"):
        docrelay.no_such_thing  # noqa: B018


def test_all_is_sorted_and_complete() -> None:
    """``docrelay.__all__`` is sorted and lists exactly the public names of the package
    (submodules such as ``docrelay.sandbox`` are reached by their own import)."""
    public = {
        name
        for name, value in vars(docrelay).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }

    assert sorted(docrelay.__all__) == docrelay.__all__
    assert sorted(public) == docrelay.__all__


def test_core_wheel_does_not_ship_the_reference_test_provider(tmp_path: Path) -> None:
    """The built core wheel holds the sandbox base but not Acme, the test provider (it lives
    in the test-only distribution ``tests/acme``, which requirements-dev installs)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT / "core")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("docrelay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    assert "docrelay/sandbox.py" in names
    assert [n for n in names if "acme" in n.lower()] == []
    assert "acme_testprovider" not in _pyproject(ROOT / "core")["project"]["dependencies"]
    assert "-e ./tests/acme" in _requirement_lines()
