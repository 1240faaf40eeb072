"""`docrelay run` delivers queued documents and stops promptly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("docrelay_procuros")

from docrelay import Document, Relay
from docrelay_procuros.sandbox import ProcurosSandbox

DOCRELAY = str(Path(sys.executable).with_name("docrelay"))
TOKEN = "run-test-token-0815"


def _order(number: str) -> bytes:
    data = json.loads(
        resources.files("docrelay_procuros").joinpath("samples", "order.json").read_text()
    )
    data["header"]["orderIdentifier"] = number
    return json.dumps(data).encode()


def test_run_stops_on_sigterm_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    """A busy `docrelay run` stops within a batch after SIGTERM; what it delivered is final,
    the rest stays queued with its key untouched, and a second run finishes the queue."""
    with ProcurosSandbox(api_token=TOKEN, faults=["slow@1.0:0.2"]) as sandbox:
        config = tmp_path / "docrelay.toml"
        config.write_text(
            f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n'
            f'[providers.procuros]\nbase_url = "{sandbox.url}"\n'
            'api_token = "${RUN_TEST_TOKEN}"\n'
            "[engine]\nbatch_size = 2\nread_timeout = 5\n"
        )
        with Relay(
            f"sqlite:///{tmp_path / 'd.db'}",
            providers={"procuros": {"base_url": sandbox.url, "api_token": TOKEN}},
        ) as r:
            for i in range(40):  # fmt: skip
                r.submit(Document(id=f"so-{i:02}", provider="procuros", kind="order",
                                  payload=_order(f"SO-{i:02}"),
                                  content_type="application/json"))  # fmt: skip
        env = {**os.environ, "RUN_TEST_TOKEN": TOKEN}
        proc = subprocess.Popen(
            [DOCRELAY, "--config", str(config), "run"], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while len(sandbox.effects) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, err = proc.communicate(timeout=10)
        stopped_after = time.monotonic() - started

        assert proc.returncode == 0, err
        assert stopped_after < 3.0
        assert "Traceback" not in err
        with Relay(
            f"sqlite:///{tmp_path / 'd.db'}",
            providers={"procuros": {"base_url": sandbox.url, "api_token": TOKEN}},
        ) as r:
            states = {s.id: s.state.value for s in r.statuses()}  # fmt: skip
            assert set(states.values()) <= {"delivered", "queued"}
            delivered = [i for i, s in states.items() if s == "delivered"]
            assert 3 <= len(delivered) < 40
            assert len(sandbox.effects) == len(delivered)
            sandbox.set_faults([])
            r.run_until_idle()
            assert {s.state.value for s in r.statuses()} == {"delivered"}
        assert len(sandbox.effects) == 40
    assert TOKEN not in out + err
