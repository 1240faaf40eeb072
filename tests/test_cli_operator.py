"""The operator's command line: one exit-code table, summaries of each run, status counts,
filters and machine output, bulk requeue, standard input, options anywhere, worker processes.

Everything runs the real ``docrelay`` script against the Procuros sandbox on 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from docrelay import Document, Relay, load_config
from docrelay_procuros.sandbox import ProcurosSandbox

DOCRELAY = Path(sys.executable).parent / "docrelay"
ROOT = Path(__file__).parents[1]
TOKEN = "procuros-sandbox-token"
ENV = {"PROCUROS_API_TOKEN": TOKEN}
SUMMARY = re.compile(r"^(interrupted: )?(\d+ [a-z_ ()]+(, )?)+( \(next in \d+ s\))? in \d+\.\d s$")


def order(number: str, supplier: bool = True) -> dict[str, object]:
    sup: dict[str, object] = {"name": "Mühlenhof"}
    if supplier:
        sup["identifiers"] = [{"identifier": "4098765000002", "domain": "GS1"}]
    return {
        "header": {
            "buyer": {"identifiers": [{"identifier": "4012345000009", "domain": "GS1"}]},
            "supplier": sup,
            "orderIdentifier": number,
            "orderDate": "2026-05-14T08:30:00Z",
        },
        "items": [{"lineNumber": 1, "description": "Dinkelmehl", "quantity": 1}],
    }


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCRELAY_", "PROCUROS_"))}
    full.update(ENV if env is None else env)
    return subprocess.run([str(DOCRELAY), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120, check=False, input=stdin)  # fmt: skip


@pytest.fixture
def procuros() -> Iterator[ProcurosSandbox]:
    sb = ProcurosSandbox()
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def cfg(tmp_path: Path, procuros: ProcurosSandbox) -> Path:
    p = tmp_path / "docrelay.toml"
    store = tmp_path / "store.db"
    p.write_text(f'[store]\nurl = "sqlite:///{store}"\n\n[providers.procuros]\n'
                 f'base_url = "{procuros.url}"\n'
                 'api_token = "${PROCUROS_API_TOKEN}"\n')  # fmt: skip
    return p


def write_orders(tmp: Path, good: int, bad: int = 0) -> list[str]:
    files = []
    for i in range(good + bad):
        f = tmp / f"PO-{i:04d}.json"
        f.write_text(json.dumps(order(f"PO-{i:04d}", supplier=i < good)))
        files.append(str(f))
    return files


def summary(proc: subprocess.CompletedProcess[str]) -> str:
    last = proc.stderr.strip().splitlines()[-1]
    assert SUMMARY.match(last), proc.stderr
    return last


# -- the exit-code table ------------------------------------------------------------------------


def test_one_exit_code_table_in_help_and_docs(tmp_path: Path) -> None:
    from docrelay.cli import EXIT_CODES

    docs = (ROOT / "docs" / "cli.md").read_text()
    for args in (["--help"], ["send", "--help"], ["run", "--help"], ["status", "--help"]):
        shown = run(args, tmp_path).stdout
        for code, _ in EXIT_CODES:
            assert re.search(rf"^\s+{code}\s+\S", shown, re.M), (args, code, shown)
    for code, _ in EXIT_CODES:
        assert f"| `{code}` |" in docs, code


def test_exit_codes_0_1_3_and_the_summary_of_send(tmp_path: Path, cfg: Path) -> None:
    good = write_orders(tmp_path, 2)
    sent = run(["--config", str(cfg), "send", "--provider", "procuros", "--kind", "order",
                *good], tmp_path)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert summary(sent).startswith("2 delivered in ")
    bad = tmp_path / "PO-bad.json"
    bad.write_text(json.dumps(order("PO-bad", supplier=False)))
    rejected = run(
        ["send", "--provider", "procuros", "--kind", "order", str(bad), "--config", str(cfg)],
        tmp_path,
    )  # fmt: skip  (--config after: accepted)
    assert rejected.returncode == 1, rejected.stderr
    assert summary(rejected).startswith("1 rejected in ")
    assert run(["status", "--config", str(cfg)], tmp_path).returncode == 1
    assert run(["status", "--config", str(cfg), "--state", "delivered"], tmp_path).returncode == 0
    assert run(["--config", str(cfg), "why", "PO-bad"], tmp_path).returncode == 1
    # A document still waiting (the provider paused by a wrong token: failed) and one queued.
    with Relay.from_config(load_config(cfg, environ=ENV)) as relay:
        relay.submit(Document(id="PO-q", provider="procuros", kind="order",
                              payload=json.dumps(order("PO-q")).encode(),
                              content_type="application/json"))  # fmt: skip
    assert run(["--config", str(cfg), "status", "PO-q"], tmp_path).returncode == 3
    assert run(["--config", str(cfg), "status", "PO-q", "PO-bad"], tmp_path).returncode == 1


def test_send_of_more_documents_than_the_table_counts_every_one(tmp_path: Path, cfg: Path) -> None:
    """Over 50 documents the table shows only the ones that are not good, and the summary
    and exit code count every document: those delivered in this run (counted from the
    run's state changes, not read back) and those that did not change in it (read)."""
    files = write_orders(tmp_path, 52, bad=3)
    args = ["--config", str(cfg), "send", "--provider", "procuros", "--kind", "order"]
    sent = run([*args, *files], tmp_path)
    assert sent.returncode == 1, sent.stderr
    assert summary(sent).startswith("52 delivered, 3 rejected in "), sent.stderr
    rows = re.findall(r"PO-\d{4}", sent.stdout)
    assert rows == ["PO-0052", "PO-0053", "PO-0054"], sent.stdout
    assert "52 more row(s) not shown" in sent.stderr, sent.stderr
    # The delivered ones again, unchanged: no state change in this run, their states read.
    again = run([*args, *files[:52]], tmp_path)
    assert again.returncode == 0, again.stderr
    assert summary(again).startswith("52 delivered in "), again.stderr
    assert re.findall(r"PO-\d{4}", again.stdout) == [], again.stdout
    both = run([*args, *files], tmp_path)
    assert both.returncode == 1, both.stderr
    assert summary(both).startswith("52 delivered, 3 rejected in "), both.stderr
    machine = run([*args, "--json", *files[:52]], tmp_path)
    assert machine.returncode == 0, machine.stderr
    assert len(json.loads(machine.stdout)) == 52


def test_run_counts_what_it_delivered_and_names_what_it_rejected(tmp_path: Path, cfg: Path) -> None:
    """``run`` counts the documents it delivered from its own state changes and reads the
    others back: the summary and the rejected ids as before."""
    with Relay.from_config(load_config(cfg, environ=ENV)) as relay:
        relay.submit_many([
            Document(id=f"PO-{i:04d}", provider="procuros", kind="order",
                     payload=json.dumps(order(f"PO-{i:04d}", supplier=i < 30)).encode(),
                     content_type="application/json")
            for i in range(32)
        ])  # fmt: skip
    ran = run(["--config", str(cfg), "run", "--until-idle"], tmp_path)
    assert ran.returncode == 1, ran.stderr
    assert summary(ran).startswith("30 delivered, 2 rejected in "), ran.stderr
    assert "rejected or failed: PO-0030, PO-0031 (see `docrelay why ID`)" in ran.stderr


def test_status_counts_filters_and_machine_output(tmp_path: Path, cfg: Path) -> None:
    files = write_orders(tmp_path, 3, bad=2)
    sent = run(["--config", str(cfg), "send", "--provider", "procuros", "--kind", "order",
                *files], tmp_path)  # fmt: skip
    assert sent.returncode == 1
    table = run(["--config", str(cfg), "status", "--limit", "2"], tmp_path)
    first = table.stdout.splitlines()[0]
    assert first == "procuros: 3 delivered, 2 rejected", table.stdout
    assert "2 of 5 rows shown" in table.stderr
    jsonl = run(["--config", str(cfg), "status", "--jsonl", "--state", "rejected"], tmp_path)
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == ["PO-0003", "PO-0004"]
    as_csv = run(["--config", str(cfg), "status", "--csv", "--provider", "procuros"], tmp_path)
    got = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(got) == 5
    assert {r["state"] for r in got} == {"delivered", "rejected"}
    assert json.loads(run(["--config", str(cfg), "status", "--json", "--since", "1h"],
                          tmp_path).stdout)  # fmt: skip
    old = run(["--config", str(cfg), "status", "--json", "--since", "2000-01-01"], tmp_path)
    assert len(json.loads(old.stdout)) == 5
    future = run(["--config", str(cfg), "status", "--json", "--since", "2999-01-01"], tmp_path)
    assert json.loads(future.stdout) == []
    assert future.returncode == 0


def test_bulk_requeue_dry_run_and_ids_from_stdin(tmp_path: Path, cfg: Path) -> None:
    files = write_orders(tmp_path, 1, bad=2)
    run(
        ["--config", str(cfg), "send", "--provider", "procuros", "--kind", "order", *files],
        tmp_path,
    )
    dry = run(["--config", str(cfg), "requeue", "--state", "rejected", "--dry-run"], tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "2 document(s) would be requeued" in dry.stderr
    assert "rejected" in run(["--config", str(cfg), "status", "PO-0001"], tmp_path).stdout
    refused = run(["--config", str(cfg), "requeue", "-"], tmp_path, stdin="PO-0000\n")
    assert refused.returncode == 2
    assert "delivered" in refused.stderr
    done = run(["--config", str(cfg), "requeue", "-"], tmp_path, stdin="PO-0001\nPO-0002\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("next attempt now") == 2


def test_send_reads_standard_input_and_refuses_empty_values(tmp_path: Path, cfg: Path) -> None:
    body = json.dumps(order("PO-stdin"))
    sent = run(["--config", str(cfg), "send", "--provider", "procuros", "--kind", "order",
                "--id", "PO-stdin", "-"], tmp_path, stdin=body)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    for args in (["--id", "", "-"], ["--kind", " ", "x.json"]):
        empty = run(["--config", str(cfg), "send", "--provider", "procuros", *args], tmp_path,
                    stdin=body)  # fmt: skip
        assert empty.returncode == 2, empty.stderr
        assert "empty" in empty.stderr, empty.stderr
    no_id = run(["--config", str(cfg), "send", "--provider", "procuros", "-"], tmp_path,
                stdin=body)  # fmt: skip
    assert no_id.returncode == 2
    assert "--id" in no_id.stderr


def test_docrelay_config_and_verbose_after_the_command(tmp_path: Path, cfg: Path) -> None:
    files = write_orders(tmp_path, 1)
    env = {**ENV, "DOCRELAY_CONFIG": str(cfg)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sent = run(["send", "--provider", "procuros", "--kind", "order", files[0], "-v"],
               elsewhere, env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "procuros PO-0000: queued -> delivered" in sent.stderr
    assert list(elsewhere.iterdir()) == []


# -- run: summaries, Ctrl-C, processes ----------------------------------------------------------


def _submit(cfg: Path, n: int, prefix: str = "R") -> list[str]:
    docs = [Document(id=f"{prefix}-{i:03d}", provider="procuros", kind="order",
                     payload=json.dumps(order(f"{prefix}-{i:03d}")).encode(),
                     content_type="application/json") for i in range(n)]  # fmt: skip
    with Relay.from_config(load_config(cfg, environ=ENV)) as relay:
        relay.submit_many(docs)
    return [d.id for d in docs]


def test_run_ctrl_c_prints_the_summary_of_that_run(
    tmp_path: Path, cfg: Path, procuros: ProcurosSandbox
) -> None:
    ids = _submit(cfg, 3)
    full = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    proc = subprocess.Popen([str(DOCRELAY), "--config", str(cfg), "run"], cwd=tmp_path,
                            env={**full, **ENV}, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        with Relay.from_config(load_config(cfg, environ=ENV)) as relay:
            while any(not s.is_final for s in relay.statuses(ids=ids)):
                assert time.monotonic() < deadline, "run did not deliver"
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    last = stderr.strip().splitlines()[-1]
    assert SUMMARY.match(last), stderr
    assert last.startswith("3 delivered in "), stderr
    assert "Traceback" not in stderr


def test_run_with_two_processes_delivers_each_document_once(
    tmp_path: Path, cfg: Path, procuros: ProcurosSandbox
) -> None:
    ids = _submit(cfg, 40)
    done = run(["--config", str(cfg), "run", "--processes", "2", "--until-idle"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert summary(done).startswith("40 delivered in "), done.stderr
    posts = [r for r in procuros.requests if r["method"] == "POST"]
    assert len(posts) == 40  # nothing twice
    with Relay.from_config(load_config(cfg, environ=ENV)) as relay:
        assert {s.state.value for s in relay.statuses(ids=ids)} == {"delivered"}
        owners = {a.key for i in ids for a in relay.history(i)}
    assert len(owners) == 40
