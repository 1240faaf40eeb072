"""The embedding example (examples/erp_connector.py) runs against the Procuros sandbox."""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("docrelay_procuros")

from docrelay_procuros.sandbox import ProcurosSandbox

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "erp_connector.py"
TOKEN = "example-token-4711"


def _order(number: str, supplier: str | None = None, drop_number: bool = False) -> str:
    data = json.loads(
        resources.files("docrelay_procuros").joinpath("samples", "order.json").read_text()
    )
    data = copy.deepcopy(data)
    data["header"]["orderIdentifier"] = number
    if supplier:
        data["header"]["supplier"]["identifiers"][0]["identifier"] = supplier
    if drop_number:
        del data["header"]["orderIdentifier"]
    return json.dumps(data)


def _run(erp: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROCUROS_API_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--erp", str(erp), "--procuros-url", url],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _erp(erp: Path) -> dict[str, tuple[str | None, str | None]]:
    with sqlite3.connect(erp) as db:
        return {n: (s, u) for n, s, u in db.execute(
            "SELECT number, status, error_url FROM sales_orders")}  # fmt: skip


def test_connector_writes_procuros_statuses_back(tmp_path: Path) -> None:
    """TRANSMITTED for 201, NO_ACTION for 202, empty status plus the portal link for 422;
    the corrected order goes again on the next run and is transmitted."""
    erp = tmp_path / "erp.db"
    with sqlite3.connect(erp) as db:
        db.execute("CREATE TABLE sales_orders (number TEXT PRIMARY KEY, payload TEXT,"
                   " status TEXT, error_url TEXT)")  # fmt: skip
        db.executemany("INSERT INTO sales_orders (number, payload) VALUES (?, ?)", [
            ("SO-1", _order("SO-1")),
            ("SO-2", _order("SO-2", supplier="4000000000999")),
            ("SO-3", _order("SO-3", drop_number=True)),
        ])  # fmt: skip
    with ProcurosSandbox(api_token=TOKEN, inactive_receivers=["4000000000999"]) as sandbox:
        first = _run(erp, sandbox.url)
        assert first.returncode == 0, first.stderr
        rows = _erp(erp)
        assert rows["SO-1"] == ("TRANSMITTED", None)
        assert rows["SO-2"] == ("NO_ACTION", None)
        assert rows["SO-3"][0] == ""
        assert rows["SO-3"][1] is not None
        assert "/errors/" in rows["SO-3"][1]
        # The ERP user corrects SO-3; the next run sends only it, as a new revision.
        with sqlite3.connect(erp) as db:
            db.execute("UPDATE sales_orders SET payload = ? WHERE number = 'SO-3'",
                       (_order("SO-3"),))  # fmt: skip
        second = _run(erp, sandbox.url)
        assert second.returncode == 0, second.stderr
        assert "order-SO-1" not in second.stdout
        assert _erp(erp)["SO-3"][0] == "TRANSMITTED"
        assert len([e for e in sandbox.effects if e["kind"] == "transaction_received"]) == 3
    # The outbox: docrelay's tables are in the ERP's own file, next to sales_orders.
    with sqlite3.connect(erp) as db:
        ids = {r[0] for r in db.execute("SELECT id FROM documents")}
    assert ids == {"order-SO-1", "order-SO-2", "order-SO-3"}
    assert not (tmp_path / "docrelay.db").exists()
    assert TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr
