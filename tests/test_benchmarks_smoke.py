"""The comparison harness runs (``python -m benchmarks compare``), with a tiny document count.

Nothing here asserts on speed: the machine is shared. The tests check that every side ran
against the reference server, that the server speaks the eConnect send, and that bad input is
refused in one line with exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._econnect import (  # noqa: E402 - the repository root is not on sys.path
    SEND_PATH,
    fetch_token,
    key_for,
    make_docs,
    send,
    session,
)
from benchmarks._server import ReferenceServer  # noqa: E402


def _compare(
    *args: str, out: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "compare", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_reference_server_speaks_the_econnect_send() -> None:
    """Token once, 200 with the documentId, 409 for a repeat, 401 without the token; the
    server runs in a process of its own."""
    with ReferenceServer() as server:
        assert server.proc.pid != os.getpid()
        s = session()
        token = fetch_token(s, server.url)
        doc = make_docs("smoke", 1)[0]
        key = key_for(doc.id)
        first = send(s, server.url, token, key, doc.payload)
        again = send(s, server.url, token, key, doc.payload)
        anonymous = requests.post(server.url + SEND_PATH, data=doc.payload, timeout=5)
        s.close()
        assert (200, {"id": key}) == (first.status_code, first.json())
        assert again.status_code == 409
        assert anonymous.status_code == 401
        stats = server.stats()
        assert {k: stats[k] for k in ("token", "200", "409", "401")} == {
            "token": 1,
            "200": 1,
            "409": 1,
            "401": 1,
        }
        # keep-alive: one connection for the session, one anonymous, one for the stats call
        assert stats["connections"] == 3


def test_compare_runs_every_side_side_by_side(tmp_path: Path) -> None:
    """Every SQLite side delivers its documents; the table and the JSON name each of them,
    with the bare loop as 1.00 and the peak RSS of the command-line sides."""
    proc = _compare("--docs", "4", "--rounds", "1", out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("compare-*-w1.json")
    data = json.loads(path.read_text())
    sides = data["sides"]
    expected = [
        "bare",
        "handwritten",
        "huey",
        "docrelay",
        "docrelay-no-otel",
        "docrelay-send",
        "docrelay-run",
    ]
    assert expected == list(sides)
    assert sides["bare"]["ratio"] == 1.0
    assert all(s["docs_per_s"] > 0 for s in sides.values())
    assert sides["docrelay-send"]["peak_rss_mib"] > 0
    for name in expected:
        assert f"| {name} |" in proc.stdout
    assert "bench-client-secret" not in proc.stdout + proc.stderr + path.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--docs", "0"], "--docs must be between 1 and 1000000"),
        (["--sides", "celery"], "unknown side 'celery'"),
        (["--delay", "soon"], "invalid float value"),
        (["--pg", "--sqlite-procs"], "two different runs"),
        (["--engine", "batch_size"], "--engine takes KEY=VALUE"),
    ],
)
def test_compare_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    """One line on stderr, exit code 2, no traceback, nothing written."""
    proc = _compare(*args, out=tmp_path / "out")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_compare_pg_without_a_server_is_a_usage_error(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DOCRELAY_TEST_PG_URL", "DOCRELAY_BENCH_PG_URL")
    }
    proc = _compare("--pg", "--docs", "2", out=tmp_path / "out", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --pg needs DOCRELAY_BENCH_PG_URL or DOCRELAY_TEST_PG_URL"
    )


def test_reference_server_stops_when_its_parent_dies(tmp_path: Path) -> None:
    """A parent killed without cleaning up leaves no server behind (the server notices its
    stdin close; a blocking accept() alone would never wake)."""
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks._server import ReferenceServer;"
        "s = ReferenceServer(); print(s.proc.pid, flush=True); os._exit(0)"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(parent.stdout.strip())
    status = Path(f"/proc/{pid}/status")
    for _ in range(600):  # up to a minute: liveness, not speed
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the reference server outlived its parent")
