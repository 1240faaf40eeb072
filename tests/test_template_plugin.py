"""plugins/_template is not installed (it is a skeleton to copy) and the root pytest
configuration does not recurse into it (``norecursedirs``), so its tests run from here: in a
child pytest that sees ``plugins/_template/src`` on the import path and the template's entry
point through a throwaway ``.dist-info`` directory, exactly as if the plugin were installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "plugins" / "_template"


@pytest.fixture
def template_path(tmp_path: Path) -> str:
    """An import path holding the template's sources and its entry-point metadata."""
    dist_info = tmp_path / "docrelay_template-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: docrelay-template\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        "[docrelay.plugins]\ntemplate = docrelay_template\n", encoding="utf-8"
    )
    return os.pathsep.join([str(TEMPLATE / "src"), str(tmp_path)])


def test_template_tests_pass(template_path: str) -> None:
    """The template's own tests (classifier, sandbox, conformance suite) pass."""
    env = {**os.environ, "PYTHONPATH": template_path}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", str(TEMPLATE / "tests")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
