"""`docrelay demo`: five sandboxes, one batch, every outcome the product promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from docrelay._demo import EXPECTED

DOCRELAY = str(Path(sys.executable).with_name("docrelay"))


def test_demo_shows_every_outcome(tmp_path: Path) -> None:
    """The demo ends with exit 0 and shows each expected outcome on a document, judged from
    the store's records (observed_outcomes), well under a minute."""
    result = subprocess.run(
        [DOCRELAY, "demo", "--json"], capture_output=True, text=True, timeout=120,
        cwd=tmp_path, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["missing"] == []
    assert set(summary["outcomes"]) == set(EXPECTED)
    assert all(summary["outcomes"][name] for name in EXPECTED)
    assert summary["seconds"] < 60
    states = {d["state"] for d in summary["documents"]}
    assert states <= {"delivered", "duplicate", "no_action", "rejected"}
    assert "Traceback" not in result.stderr


def test_demo_table_for_people(tmp_path: Path) -> None:
    """Without --json the demo prints the status table and a tick per outcome."""
    result = subprocess.run(
        [DOCRELAY, "demo"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-2000:]
    for name in EXPECTED:
        assert f"✓ {name}" in result.stdout
    assert "✗" not in result.stdout
