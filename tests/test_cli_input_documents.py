"""``docrelay send`` checks every file before it stores any.

The real ``docrelay`` script runs against the eConnect (XML) and Procuros (JSON) sandboxes on
127.0.0.1. An empty file, a payload that is not the JSON or XML the provider takes
(``ProviderInfo.content_type``), a file over the size limit (``[engine] max_payload_bytes``
when the provider declares none) and an empty option value are refused: one line per bad
file, exit 2, nothing stored and nothing sent. Before, such files were stored and sent, and
came back ``rejected`` (or were taken as given, like ``--id ""``).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docrelay_econnect.sandbox import EConnectSandbox
from docrelay_procuros.sandbox import ProcurosSandbox

DOCRELAY = Path(sys.executable).parent / "docrelay"
PLUGINS = Path(__file__).parents[1] / "plugins"
INVOICE = PLUGINS / "econnect/src/docrelay_econnect/samples/invoice-INV-2024-0101.xml"
ORDER = PLUGINS / "procuros/src/docrelay_procuros/samples/order.json"
SECRET = "documents-cli-secret-77b"
ENV = {"DOC_SECRET": SECRET, "PROCUROS_TOKEN": "procuros-sandbox-token"}


@pytest.fixture(scope="module")
def econnect() -> Iterator[EConnectSandbox]:
    sb = EConnectSandbox(client_id="doc-client", client_secret=SECRET, delivery_delay=0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def procuros() -> Iterator[ProcurosSandbox]:
    sb = ProcurosSandbox()
    sb.start()
    yield sb
    sb.stop()


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")} | ENV
    return subprocess.run(
        [str(DOCRELAY), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def error_lines(proc: subprocess.CompletedProcess[str], count: int = 1) -> list[str]:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == count, proc.stderr
    assert all(line.startswith("docrelay: error:") for line in lines), lines
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines


def config(tmp: Path, econnect: EConnectSandbox, procuros: ProcurosSandbox,
           engine: str = "") -> Path:  # fmt: skip
    p = tmp / "docrelay.toml"
    p.write_text(
        f"""
[store]
url = "sqlite:///{tmp / "store.db"}"

[engine]
{engine}

[providers.econnect]
base_url = "{econnect.url}"
client_id = "doc-client"
client_secret = "${{DOC_SECRET}}"
party_id = "NL:KVK:12345678"
token_url = "{econnect.url}/connect/token"

[providers.procuros]
base_url = "{procuros.url}"
api_token = "${{PROCUROS_TOKEN}}"
"""
    )
    return p


def stored(tmp: Path) -> list[str]:
    db = tmp / "store.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'documents'").fetchone():
            return []
        return [r[0] for r in conn.execute("SELECT id FROM documents")]
    finally:
        conn.close()


def _files(tmp: Path) -> dict[str, tuple[str, bytes, str]]:
    """case -> (provider, file name and content, needle)."""
    big = b'{"type": "ORDER", "content": {"note": "' + b"x" * 3000 + b'"}}'
    return {
        "empty-xml": ("econnect", "empty-inv.xml", b"", "is empty"),
        "blank-json": ("procuros", "blank-order.json", b"  \n\t\n", "is empty"),
        "not-xml": ("econnect", "text-inv.xml", b"INV-1;2024-01-01;100.00\n", "not XML"),
        "truncated-xml": ("econnect", "cut-inv.xml", INVOICE.read_bytes()[:400], "not XML"),
        "entity-xml": (
            "econnect",
            "entity-inv.xml",
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
            "not XML",
        ),
        "not-json": ("procuros", "xml-order.json", INVOICE.read_bytes(), "not JSON"),
        "broken-json": ("procuros", "broken-order.json", ORDER.read_bytes()[:-5], "not JSON"),
        "over-engine-limit": ("procuros", "big-order.json", big, "over the procuros limit of 2000"),
    }  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "case", ["empty-xml", "blank-json", "not-xml", "truncated-xml", "entity-xml", "not-json",
             "broken-json", "over-engine-limit"],
)  # fmt: skip
def test_bad_file_is_refused_before_storing(
    tmp_path: Path, case: str, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    provider, name, content, needle = _files(tmp_path)[case]
    (tmp_path / name).write_bytes(content)
    limit = "max_payload_bytes = 2000" if case == "over-engine-limit" else ""
    cfg = config(tmp_path, econnect, procuros, engine=limit)
    sent = (len(econnect.requests), len(procuros.requests))
    proc = run(["--config", str(cfg), "send", "--provider", provider, str(tmp_path / name)],
               tmp_path)  # fmt: skip
    [line] = error_lines(proc)
    assert needle in line, line
    assert name in line, line
    assert stored(tmp_path) == []
    assert (len(econnect.requests), len(procuros.requests)) == sent


def test_one_line_per_bad_file_and_nothing_stored(
    tmp_path: Path, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    """Two good orders and two bad ones: a line for each bad file; no order is stored."""
    cfg = config(tmp_path, econnect, procuros)
    good1, good2 = tmp_path / "order-1.json", tmp_path / "order-2.json"
    good1.write_bytes(ORDER.read_bytes())
    good2.write_bytes(ORDER.read_bytes().replace(b"{", b'{"_n": 2, ', 1))
    empty, notjson = tmp_path / "order-3.json", tmp_path / "order-4.json"
    empty.write_bytes(b"")
    notjson.write_bytes(b"<Order/>")
    sent = len(procuros.requests)
    proc = run(["--config", str(cfg), "send", "--provider", "procuros", str(good1), str(empty),
                str(good2), str(notjson)], tmp_path)  # fmt: skip
    first, second = error_lines(proc, count=2)
    assert "order-3" in first, first
    assert "empty" in first, first
    assert "order-4" in second, second
    assert "not JSON" in second, second
    assert stored(tmp_path) == []
    assert len(procuros.requests) == sent
    # The same good files alone go through: the refusal was about the bad ones only.
    ok = run(["--config", str(cfg), "send", "--provider", "procuros", "--json", str(good1),
              str(good2)], tmp_path)  # fmt: skip
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert sorted(stored(tmp_path)) == ["order-1", "order-2"]


@pytest.mark.parametrize("flag", ["--id", "--provider", "--kind", "--env", "--base-url"])
@pytest.mark.parametrize("value", ["", "  "])
def test_empty_option_value_is_refused(
    tmp_path: Path, flag: str, value: str, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    """``--id ""`` used to fall back to the file name; every empty value is now an error."""
    cfg = config(tmp_path, econnect, procuros)
    doc = tmp_path / "inv-9.xml"
    doc.write_bytes(INVOICE.read_bytes())
    args = ["--provider", "econnect", flag, value] if flag != "--provider" else [flag, value]
    sent = len(econnect.requests)
    proc = run(["--config", str(cfg), "send", *args, str(doc)], tmp_path)
    [line] = error_lines(proc)
    assert flag in line, line
    assert stored(tmp_path) == []
    assert len(econnect.requests) == sent
