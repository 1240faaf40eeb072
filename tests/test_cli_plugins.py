"""`docrelay plugins` lists installed plugins, and a broken one does not break it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DOCRELAY = str(Path(sys.executable).with_name("docrelay"))


def _install(site: Path, dist: str, module: str, source: str) -> None:
    """A minimal installed distribution with a docrelay.plugins entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[docrelay.plugins]\n{module} = {module}\n")


def _plugins(
    site: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(site), **(env or {})}
    return subprocess.run(
        [DOCRELAY, "plugins", *args], capture_output=True, text=True, env=environ,
        timeout=60, check=False, cwd=site,
    )  # fmt: skip


def test_broken_plugin_is_reported_and_the_others_load(tmp_path: Path) -> None:
    """A plugin that fails to import is listed with its distribution and error; the
    installed providers still load; the command exits 0 and prints no traceback."""
    _install(tmp_path, "docrelay-broken", "broken_plugin",
             "raise ImportError('this plugin is broken on purpose')\n")  # fmt: skip
    _install(
        tmp_path,
        "docrelay-unknownhook",
        "unknownhook_plugin",
        "import docrelay\n\n@docrelay.hookimpl\ndef no_such_hook():\n    return 1\n",
    )

    result = _plugins(tmp_path, "--json")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    broken = rows["broken_plugin"]
    assert broken["status"] == "error"
    assert broken["distribution"] == "docrelay-broken"
    assert "broken on purpose" in broken["error"]
    assert rows["unknownhook_plugin"]["status"] == "error"
    assert "no_such_hook" in rows["unknownhook_plugin"]["error"]
    loaded = {n for n, r in rows.items() if r["status"] == "loaded" and r["kind"] == "provider"}
    assert {"econnect", "procuros", "siesmart", "ebh", "aqi"} <= loaded


def test_disabled_plugins_are_listed_as_blocked(tmp_path: Path) -> None:
    """DOCRELAY_DISABLED_PLUGINS blocks a plugin: listed, not loaded."""
    result = _plugins(tmp_path, "--json", env={"DOCRELAY_DISABLED_PLUGINS": "aqi,ebh"})

    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["aqi"]["status"] == "blocked"
    assert rows["ebh"]["status"] == "blocked"
    assert rows["procuros"]["status"] == "loaded"


def test_plugins_table_names_the_error(tmp_path: Path) -> None:
    """The human table shows the broken plugin and its error too."""
    _install(tmp_path, "docrelay-broken", "broken_plugin", "raise RuntimeError('kaputt')\n")

    result = _plugins(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "broken_plugin" in result.stdout
    assert "kaputt" in result.stdout


def test_misspelt_hook_gets_a_did_you_mean(tmp_path: Path) -> None:
    """A hook name that is almost a real one is named, with the hook it probably means."""
    _install(
        tmp_path,
        "docrelay-typo",
        "typo_plugin",
        "import docrelay\n\n@docrelay.hookimpl\ndef prepare_header(request, ctx):\n    return {}\n",
    )

    result = _plugins(tmp_path, "--json")

    assert result.returncode == 0, result.stderr
    row = {r["name"]: r for r in json.loads(result.stdout)}["typo_plugin"]
    assert row["status"] == "error"
    assert "'prepare_header' (did you mean 'prepare_headers'?)" in row["error"]


def test_unsupported_hook_api_is_refused_and_apis_are_shown(tmp_path: Path) -> None:
    """A plugin written for a hook API this docrelay does not speak is left out with a clear
    message; the loaded plugins show the API they declare."""
    _install(tmp_path, "docrelay-future", "future_plugin", "DOCRELAY_HOOK_API = 99\n")

    result = _plugins(tmp_path, "--json")

    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["future_plugin"]["status"] == "error"
    assert "hook API 99" in rows["future_plugin"]["error"]
    assert rows["procuros"]["hook_api"] == 2
    table = _plugins(tmp_path)
    assert "api" in table.stdout
