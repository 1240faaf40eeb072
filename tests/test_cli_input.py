"""Bad input at the command line: one clear line, exit code 2, nothing half-written.

Every case runs the real ``docrelay`` script (the one next to ``sys.executable``) in a
subprocess, talking only to 127.0.0.1. Each must print exactly one line on stderr starting
with ``docrelay: error:``, exit with 2, show no traceback, and leave the store as it was: a
``send`` of several files is all or nothing, and a corrupt, foreign or newer store file is
refused byte for byte untouched. Last, a provider answering with a huge body cannot blow up
the stored attempt records or the sender's memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docrelay.sandbox import Route, Sandbox, SandboxRequest, SandboxResponse

DOCRELAY = Path(sys.executable).parent / "docrelay"
SAMPLES = Path(__file__).parents[1] / "plugins/econnect/src/docrelay_econnect/samples"
INVOICE = SAMPLES / "invoice-INV-2024-0101.xml"
CLOSED = "http://127.0.0.1:9"  # nothing listens: a bug that sends would fail loudly


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(DOCRELAY), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("docrelay: error:"), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def write_config(tmp: Path, body: str, name: str = "docrelay.toml") -> Path:
    p = tmp / name
    p.write_text(body)
    return p


def econnect_config(tmp: Path, base_url: str = CLOSED, extra: str = "") -> Path:
    return write_config(
        tmp,
        f"""
[store]
url = "sqlite:///{tmp / "store.db"}"

[providers.econnect]
base_url = "{base_url}"
client_id = "cli-client"
client_secret = "${{CLI_TEST_SECRET}}"
party_id = "NL:KVK:12345678"
{extra}
""",
    )


ENV = {"CLI_TEST_SECRET": "cli-test-secret-value-91f"}


def store_docs(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "documents" not in tables:
            return []
        return [r[0] for r in conn.execute("SELECT id FROM documents")]
    finally:
        conn.close()


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.exists() else b"<absent>")
    return h.hexdigest()


# -- configuration ----------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    proc = run(["--config", str(tmp_path / "nope.toml"), "status"], tmp_path)
    assert_one_line_error(proc, "not found")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[store\nurl = 1", "invalid TOML"),
        ('[store]\nurl = "sqlite:///x.db"\n[bogus]\nx = 1\n', "unknown section"),
        ("store = 5\n", "must be a table"),
        ('[engine]\nmax_attempts = "many"\n', "must be a number"),
        ("[engine]\nwhatever = 1\n", "unknown [engine]"),
        ('[plugins]\nenabled = "econnect"\n', "list of names"),
        (
            '[providers.econnect]\nbase_url = "http://198.51.100.7"\nclient_id = "c"\n'
            'client_secret = "${CLI_TEST_SECRET}"\nparty_id = "p"\n',
            "plain http",
        ),
        (
            '[providers.econnect]\nbase_url = "http://127.0.0.1:9"\nclient_id = "c"\n'
            'client_secret = "${CLI_TEST_SECRET}"\nparty_id = "p"\ncolour = "blue"\n',
            "unknown setting",
        ),
        ('[providers.nosuchprovider]\nbase_url = "http://127.0.0.1:9"\n', "nosuchprovider"),
    ],
    ids=[
        "malformed-toml",
        "unknown-section",
        "not-a-table",
        "engine-type",
        "engine-unknown",
        "plugins-type",
        "insecure-http",
        "unknown-setting",
        "unknown-provider",
    ],
)
def test_bad_configuration(tmp_path: Path, body: str, needle: str) -> None:
    cfg = write_config(tmp_path, body)
    proc = run(["--config", str(cfg), "status"], tmp_path, ENV)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "x.db").exists()


def test_inline_secret_is_refused_and_not_echoed(tmp_path: Path) -> None:
    secret = "inline-secret-do-not-print-7c2"
    cfg = write_config(
        tmp_path,
        f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n[providers.procuros]\n'
        f'base_url = "http://127.0.0.1:9"\napi_token = "{secret}"\n',
    )
    proc = run(["--config", str(cfg), "status"], tmp_path)
    assert_one_line_error(proc, "api_token", "secret")
    assert secret not in proc.stderr + proc.stdout


def test_unknown_provider_on_send(tmp_path: Path) -> None:
    cfg = econnect_config(tmp_path)
    proc = run(["--config", str(cfg), "send", "--provider", "nosuch", str(INVOICE)], tmp_path, ENV)
    assert_one_line_error(proc, "nosuch")
    assert store_docs(tmp_path / "store.db") == []


# -- input files and ids ------------------------------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "adir.xml").mkdir()
    (tmp / "dangling.xml").symlink_to(tmp / "gone.xml")
    (tmp / ".hidden.xml").write_bytes(INVOICE.read_bytes())
    (tmp / "big.xml").write_bytes(INVOICE.read_bytes() * 40)
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    (tmp / "a" / "same.xml").write_bytes(INVOICE.read_bytes())
    (tmp / "b" / "same.xml").write_bytes(INVOICE.read_bytes())
    return {
        "missing-file": ([str(tmp / "nope.xml")], "not found"),
        "directory": ([str(tmp / "adir.xml")], "not a file"),
        "dangling-symlink": ([str(tmp / "dangling.xml")], "not found"),
        "invalid-id-from-name": ([str(tmp / ".hidden.xml")], "invalid document id"),
        "oversized": ([str(tmp / "big.xml")], "over the econnect limit"),
        "same-id-twice": ([str(tmp / "a" / "same.xml"), str(tmp / "b" / "same.xml")], "--id"),
        "bad-kind": (["--kind", "recipe", str(INVOICE)], "kinds"),
        "invalid-id": (["--id", "bad id!", str(INVOICE)], "invalid document id"),
        "id-too-long": (["--id", "x" * 201, str(INVOICE)], "invalid document id"),
        "id-with-two-files": (["--id", "ok-1", str(INVOICE), str(INVOICE)], "--id"),
        "bad-meta": (["--meta", "novalue", str(INVOICE)], "--meta"),
        "bad-meta-empty-key": (["--meta", "=v", str(INVOICE)], "--meta"),
        "env-and-base-url": (["--env", "sandbox", "--base-url", CLOSED, str(INVOICE)], "not both"),
    }


CASES = [
    "missing-file", "directory", "dangling-symlink", "invalid-id-from-name", "oversized",
    "same-id-twice", "bad-kind", "invalid-id", "id-too-long", "id-with-two-files", "bad-meta",
    "bad-meta-empty-key", "env-and-base-url",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_send_input(tmp_path: Path, case: str) -> None:
    cfg = econnect_config(tmp_path, extra="max_payload_bytes = 20000")
    args, needle = _bad_inputs(tmp_path)[case]
    proc = run(["--config", str(cfg), "send", "--provider", "econnect", *args], tmp_path, ENV)
    assert_one_line_error(proc, needle)
    assert store_docs(tmp_path / "store.db") == []


@pytest.mark.parametrize("bad", ["missing-file", "invalid-id-from-name", "oversized", "directory"])
def test_send_is_all_or_nothing(tmp_path: Path, bad: str) -> None:
    """One good file and one bad one: the store has neither (and nothing was sent)."""
    cfg = econnect_config(tmp_path, extra="max_payload_bytes = 20000")
    good = tmp_path / "good-invoice.xml"
    good.write_bytes(INVOICE.read_bytes())
    args, needle = _bad_inputs(tmp_path)[bad]
    proc = run(["--config", str(cfg), "send", "--provider", "econnect", str(good), *args],
               tmp_path, ENV)  # fmt: skip
    assert_one_line_error(proc, needle)
    assert store_docs(tmp_path / "store.db") == []


def test_unset_secret_is_refused_when_the_provider_sends(tmp_path: Path) -> None:
    """An unset ``${VAR}`` is an error when its provider is used (``send``), naming the
    variable; reading commands do not need it (test_redteam_usage)."""
    cfg = write_config(
        tmp_path,
        '[providers.econnect]\nbase_url = "http://127.0.0.1:9"\nclient_id = "c"\n'
        'client_secret = "${NOT_SET_ANYWHERE_42}"\nparty_id = "p"\n',
    )
    proc = run(["--config", str(cfg), "send", "--provider", "econnect", str(INVOICE)], tmp_path)
    assert_one_line_error(proc, "NOT_SET_ANYWHERE_42", "[providers.econnect] client_secret")
    assert not (tmp_path / "docrelay.db").exists()


def test_unknown_document_for_why_and_requeue(tmp_path: Path) -> None:
    cfg = econnect_config(tmp_path)
    assert run(["--config", str(cfg), "run", "--until-idle"], tmp_path, ENV).returncode == 0
    for cmd in (["why", "no-such-doc"], ["requeue", "no-such-doc"], ["status", "no-such-doc"]):
        assert_one_line_error(run(["--config", str(cfg), *cmd], tmp_path, ENV), "no-such-doc")


# -- the store file -----------------------------------------------------------------------------


def _store_cfg(tmp: Path, url: str) -> Path:
    return write_config(tmp, f'[store]\nurl = "{url}"\n', name="store.toml")


def test_store_in_a_missing_directory(tmp_path: Path) -> None:
    cfg = _store_cfg(tmp_path, f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 's.db'}")
    assert_one_line_error(run(["--config", str(cfg), "status"], tmp_path), "does not exist")
    assert not (tmp_path / "no").exists()


def _newer(db: Path) -> None:
    from docrelay import Relay

    Relay(f"sqlite:///{db}", autoload=False).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE docrelay_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _foreign(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (42.0)")
    conn.commit()
    conn.close()


def _corrupt(db: Path) -> None:
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))


def _text(db: Path) -> None:
    db.write_bytes(b"this is my ERP export, not a database\n" * 50)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_corrupt, "store"),
        (_text, "store"),
        (_foreign, "not a docrelay store"),
        (_newer, "newer"),
    ],
    ids=["corrupt", "not-sqlite", "foreign", "newer-schema"],
)
def test_bad_store_is_refused_untouched(tmp_path: Path, make: Any, needle: str) -> None:
    db = tmp_path / "s.db"
    make(db)
    files = [db, tmp_path / "s.db-wal"]
    before = digest(files)
    cfg = _store_cfg(tmp_path, f"sqlite:///{db}")
    for cmd in (["status"], ["status", "--json"], ["run", "--until-idle"], ["why", "x-1"]):
        line = assert_one_line_error(run(["--config", str(cfg), *cmd], tmp_path), needle)
        assert "Traceback" not in line
    good = tmp_path / "inv-1.xml"
    good.write_bytes(INVOICE.read_bytes())
    proc = run(["--config", str(cfg), "send", "--provider", "econnect", "--base-url", CLOSED,
                str(good)], tmp_path, ENV)  # fmt: skip
    assert_one_line_error(proc)
    assert digest(files) == before, "the store file was rewritten"


# -- huge answers ---------------------------------------------------------------------------------


class HugeAnswerSandbox(Sandbox):
    """An eConnect look-alike whose every send is answered with a huge body."""

    name = "huge"
    options = {"size": 5 * 1024 * 1024, "status": 500}

    def routes(self) -> list[Route]:
        import re

        return [
            Route("POST", re.compile(r"^/connect/token$"), self._token, faults=False),
            Route("POST", re.compile(r"^/api/v1/.+/send$"), self._send),
        ]

    def _token(self, request: SandboxRequest) -> SandboxResponse:
        return SandboxResponse.json(200, {"access_token": "huge-token-0123456789",
                                          "expires_in": 3600, "token_type": "Bearer"})  # fmt: skip

    def _send(self, request: SandboxRequest) -> SandboxResponse:
        size = int(self.config["size"])
        body = b'{"message": "' + b"A" * size + b'", "code": "API500"}'
        return SandboxResponse(int(self.config["status"]), body,
                               {"Content-Type": "application/json"})  # fmt: skip


@pytest.fixture
def huge() -> Iterator[HugeAnswerSandbox]:
    sb = HugeAnswerSandbox(size=32 * 1024 * 1024, status=500)
    sb.start()
    yield sb
    sb.stop()


def _send_measured(tmp: Path, sandbox: Sandbox, name: str) -> tuple[int, int, str]:
    """``docrelay send`` of one invoice; returns (exit code, max RSS in KiB, stdout)."""
    sub = tmp / name
    sub.mkdir()
    cfg = econnect_config(sub, base_url=sandbox.url)
    doc = sub / f"{name}-inv.xml"
    doc.write_bytes(INVOICE.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")} | ENV
    proc = subprocess.Popen(
        [str(DOCRELAY), "--config", str(cfg), "send", "--provider", "econnect", "--json", str(doc)],
        cwd=sub, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=120)
    _, _status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    rss = usage.ru_maxrss if usage is not None else 0
    return proc.returncode, rss, out.decode()


def test_huge_provider_answers_stay_bounded(tmp_path: Path) -> None:
    """A provider answering every send with 32 MiB (and then 5 MiB): the store stays small
    (bodies are capped at MAX_BODY_BYTES), and so does the sender's memory."""
    import resource

    from docrelay._models import MAX_BODY_BYTES

    results = {}
    for name, size in (("small", 100), ("huge", 32 * 1024 * 1024), ("five", 5 * 1024 * 1024)):
        sb = HugeAnswerSandbox(size=size, status=500 if name != "five" else 400)
        sb.start()
        try:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            code, _, out = _send_measured(tmp_path, sb, name)
            after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        finally:
            sb.stop()
        assert code in (0, 1, 3), out  # 3: still waiting for a retry
        [status] = json.loads(out)
        results[name] = (status, max(after, before))
        db = tmp_path / name / "store.db"
        size_on_disk = sum(p.stat().st_size for p in db.parent.glob("store.db*"))
        assert size_on_disk < 2 * 1024 * 1024, (name, size_on_disk)
        conn = sqlite3.connect(db)
        longest = conn.execute(
            "SELECT MAX(LENGTH(outcome) + LENGTH(COALESCE(request, ''))) FROM attempts"
        ).fetchone()[0]
        conn.close()
        assert longest <= MAX_BODY_BYTES + 4096, (name, longest)
    assert results["huge"][0]["state"] in ("retry_wait", "failed"), results["huge"][0]
    assert results["five"][0]["state"] == "rejected", results["five"][0]
    # RUSAGE_CHILDREN keeps the maximum over all children: the huge run may not raise it by
    # anything near the 32 MiB it was sent (a full read would cost several copies of it).
    small_rss, huge_rss = results["small"][1], results["huge"][1]
    assert huge_rss - small_rss < 16 * 1024, (small_rss, huge_rss)
