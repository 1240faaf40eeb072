"""Bad settings are refused when the configuration loads: one line, exit 2, nothing stored.

Every case runs the real ``docrelay`` script in a subprocess against the eConnect and
Procuros sandboxes on 127.0.0.1, with a ``docrelay.toml`` that has one bad value. Before
these checks, ``batch_size = 0`` hung ``send``, ``read_timeout = 0`` (or negative, ``nan``,
``inf``) left a document in ``sending`` with a traceback, ``enabled = "no"`` was taken as
true, and many other values were accepted or gave "internal error". Each must now print
exactly one ``docrelay: error:`` line naming the table, the key and what is allowed (never
a secret's value), exit 2, create no store and send nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docrelay_econnect.sandbox import EConnectSandbox
from docrelay_procuros.sandbox import ProcurosSandbox

DOCRELAY = Path(sys.executable).parent / "docrelay"
SAMPLES = Path(__file__).parents[1] / "plugins/econnect/src/docrelay_econnect/samples"
INVOICE = SAMPLES / "invoice-INV-2024-0101.xml"
SECRET = "settings-cli-secret-5e1a"
ENV = {"SETTINGS_SECRET": SECRET, "BLANK_SECRET": "   ", "PROCUROS_TOKEN": "procuros-sandbox-token"}


@pytest.fixture(scope="module")
def econnect() -> Iterator[EConnectSandbox]:
    sb = EConnectSandbox(client_id="settings-client", client_secret=SECRET, delivery_delay=0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def procuros() -> Iterator[ProcurosSandbox]:
    sb = ProcurosSandbox()
    sb.start()
    yield sb
    sb.stop()


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")} | ENV
    return subprocess.run(
        [str(DOCRELAY), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("docrelay: error:"), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "internal error" not in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert SECRET not in proc.stderr + proc.stdout
    return lines[0]


def config(tmp: Path, econnect_url: str, procuros_url: str, *, engine: str = "",
           econnect: str = "", procuros: str = "", top: str = "") -> Path:  # fmt: skip
    p = tmp / "docrelay.toml"
    p.write_text(
        f"""
[store]
url = "sqlite:///{tmp / "store.db"}"
{top}

[engine]
{engine}

[providers.econnect]
base_url = "{econnect_url}"
client_id = "settings-client"
client_secret = "${{SETTINGS_SECRET}}"
party_id = "NL:KVK:12345678"
token_url = "{econnect_url}/connect/token"
{econnect}

[providers.procuros]
base_url = "{procuros_url}"
api_token = "${{PROCUROS_TOKEN}}"
{procuros}
"""
    )
    return p


# (section, line, needles): one bad value each.
CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "batch-size-0": ("engine", "batch_size = 0", ("[engine] batch_size", "1..10000")),
    "batch-size-float": ("engine", "batch_size = 2.5", ("[engine] batch_size", "whole")),
    "read-timeout-0": ("engine", "read_timeout = 0", ("[engine] read_timeout", "> 0")),
    "read-timeout-negative": ("engine", "read_timeout = -1", ("[engine] read_timeout", "> 0")),
    "read-timeout-nan": ("engine", "read_timeout = nan", ("[engine] read_timeout", "finite")),
    "read-timeout-inf": ("engine", "read_timeout = inf", ("[engine] read_timeout", "finite")),
    "max-attempts-0": ("engine", "max_attempts = 0", ("[engine] max_attempts", ">= 1")),
    "max-attempts-negative": ("engine", "max_attempts = -1", ("[engine] max_attempts",)),
    "max-attempts-string": ("engine", 'max_attempts = "8"', ("[engine] max_attempts", "number")),
    "lease-seconds-0": ("engine", "lease_seconds = 0", ("[engine] lease_seconds", ">= 0.5")),
    "rate-margin-1": ("engine", "rate_margin = 1.0", ("[engine] rate_margin",)),
    "engine-max-payload-0": ("engine", "max_payload_bytes = 0", ("[engine] max_payload_bytes",)),
    "provider-read-timeout-0": (
        "econnect",
        "read_timeout = 0",
        ("[providers.econnect] read_timeout", "> 0"),
    ),
    "provider-connect-timeout-string": (
        "econnect",
        'connect_timeout = "5"',
        ("[providers.econnect] connect_timeout", "number"),
    ),
    "provider-read-timeout-inf": (
        "econnect",
        "read_timeout = inf",
        ("[providers.econnect] read_timeout", "finite"),
    ),
    "verify-number": ("econnect", "verify = 5", ("[providers.econnect] verify", "true, false")),
    "verify-missing-file": (
        "econnect",
        'verify = "/no/such/ca-bundle.pem"',
        ("[providers.econnect] verify", "file"),
    ),
    "enabled-string": ("econnect", 'enabled = "no"', ("[providers.econnect] enabled", "true or")),
    "insecure-string": (
        "econnect",
        'allow_insecure_http = "yes"',
        ("[providers.econnect] allow_insecure_http",),
    ),
    "provider-max-payload-0": (
        "procuros",
        "max_payload_bytes = 0",
        ("[providers.procuros] max_payload_bytes", ">= 1"),
    ),
    "rate-limit-zero": ("procuros", 'rate_limit = "0/60"', ("[providers.procuros] rate_limit",)),
    "rate-limit-per-zero": (
        "procuros",
        'rate_limit = "10/0"',
        ("[providers.procuros] rate_limit",),
    ),
    "rate-limit-number": ("procuros", "rate_limit = 100", ("[providers.procuros] rate_limit",)),
    "blank-secret": (
        "econnect",
        'client_secret = "${BLANK_SECRET}"',
        ("[providers.econnect] client_secret",),
    ),
    "blank-webhook-secret": (
        "procuros",
        'webhook_secret = "${BLANK_SECRET}"',
        ("[providers.procuros] webhook_secret",),
    ),
    "plugin-setting-bool": (
        "procuros",
        'report_errors = "no"',
        ("[providers.procuros] report_errors", "true or"),
    ),
    "plugin-setting-int": (
        "procuros",
        'report_after_failures = "1"',
        ("[providers.procuros] report_after_failures",),
    ),
    "plugin-setting-str": ("econnect", "scope = 5", ("[providers.econnect] scope", "string")),
    "webhooks-port-high": ("top", "[webhooks]\nport = 99999", ("[webhooks] port", "65535")),
    "webhooks-port-0": ("top", "[webhooks]\nport = 0", ("[webhooks] port", "65535")),
    "webhooks-port-string": ("top", '[webhooks]\nport = "80"', ("[webhooks] port",)),
    "webhooks-host-empty": ("top", '[webhooks]\nhost = ""', ("[webhooks] host",)),
    "webhooks-unknown": ("top", '[webhooks]\nhots = "0.0.0.0"', ("[webhooks]", "hots")),
    "store-unknown-option": ("store", "colour = 1", ("[store]", "colour")),
    "store-timeout-string": ("store", 'timeout = "long"', ("[store] timeout", "number")),
    "plugins-disabled-unknown": (
        "top",
        '[plugins]\ndisabled = ["nosuch"]',
        ("[plugins] disabled", "nosuch"),
    ),
    "plugins-disabled-typo": (
        "top",
        '[plugins]\ndisabled = ["econect"]',
        ("did you mean", "econnect"),
    ),
    "plugins-enabled-typo": (
        "top",
        '[plugins]\nenabled = ["econnect", "procuro"]',
        ("[plugins] enabled", "procuros"),
    ),
}


def _write(tmp: Path, case: str, ec: EConnectSandbox, pr: ProcurosSandbox) -> Path:
    section, line, _ = CASES[case]
    if section == "store":
        # [store] is written by config(): add the option right after its url line.
        p = config(tmp, ec.url, pr.url)
        text = p.read_text().replace('store.db"\n', f'store.db"\n{line}\n', 1)
        p.write_text(text)
        return p
    kwargs = {
        "engine": {"engine": line},
        "econnect": {"econnect": line},
        "procuros": {"procuros": line},
        "top": {},
    }[section]
    p = config(tmp, ec.url, pr.url, **kwargs)
    if line.startswith("client_secret"):
        # Replace the good client_secret line instead of giving the key twice.
        text = p.read_text().replace('client_secret = "${SETTINGS_SECRET}"\n', "", 1)
        p.write_text(text)
    if section == "top":
        p.write_text(p.read_text() + "\n" + line + "\n")
    return p


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_refused_by_status(
    tmp_path: Path, case: str, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    cfg = _write(tmp_path, case, econnect, procuros)
    proc = run(["--config", str(cfg), "status"], tmp_path)
    assert_one_line_error(proc, *CASES[case][2])
    assert not (tmp_path / "store.db").exists()


SEND_CASES = ["batch-size-0", "read-timeout-0", "read-timeout-nan", "max-attempts-0",
              "lease-seconds-0", "enabled-string", "verify-number", "blank-secret",
              "provider-read-timeout-0", "plugins-disabled-typo"]  # fmt: skip


@pytest.mark.parametrize("case", SEND_CASES)
def test_bad_setting_refused_by_send(
    tmp_path: Path, case: str, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    """``send`` refuses before anything is stored or sent (``batch_size = 0`` hung here)."""
    cfg = _write(tmp_path, case, econnect, procuros)
    doc = tmp_path / f"{case}-inv.xml"
    doc.write_bytes(INVOICE.read_bytes())
    before = len(econnect.requests)
    proc = run(["--config", str(cfg), "send", "--provider", "econnect", str(doc)], tmp_path, 30)
    assert_one_line_error(proc, *CASES[case][2])
    assert not (tmp_path / "store.db").exists()
    assert len(econnect.requests) == before


def test_good_settings_still_deliver(
    tmp_path: Path, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    """Every kind of setting at a good value: the invoice is delivered over real HTTP."""
    import trustme

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))  # a real bundle, unused over plain http
    cfg = config(
        tmp_path, econnect.url, procuros.url,
        engine="batch_size = 4\nread_timeout = 10\nmax_attempts = 3\nmax_payload_bytes = 100000",
        econnect=f'read_timeout = 5.5\nverify = "{ca}"\nenabled = true\nscope = "ap"',
        procuros='rate_limit = "100/60"\nreport_errors = false\n'
                 'webhook_secret = "${SETTINGS_SECRET}"',
        top='[webhooks]\nhost = "127.0.0.1"\nport = 8089\n[plugins]\ndisabled = ["aqi"]',
    )  # fmt: skip
    doc = tmp_path / "good-inv.xml"
    doc.write_bytes(INVOICE.read_bytes())
    proc = run(["--config", str(cfg), "send", "--provider", "econnect", "--json", str(doc)],
               tmp_path)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert '"state": "delivered"' in proc.stdout


@pytest.mark.parametrize("case", ["batch-size-0", "enabled-string", "plugins-disabled-typo",
                                  "webhooks-port-high", "store-unknown-option"])  # fmt: skip
def test_bad_setting_leaves_an_existing_store_unchanged(
    tmp_path: Path, case: str, econnect: EConnectSandbox, procuros: ProcurosSandbox
) -> None:
    """A store with a delivered invoice: a bad setting refuses every command, byte for byte
    leaving the store as it was."""
    import hashlib

    good = config(tmp_path, econnect.url, procuros.url)
    doc = tmp_path / f"kept-{case}.xml"
    doc.write_bytes(INVOICE.read_bytes())
    first = run(["--config", str(good), "send", "--provider", "econnect", str(doc)], tmp_path)
    assert first.returncode == 0, first.stderr
    files = sorted(tmp_path.glob("store.db*"))

    def digest() -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    before = digest()
    bad = _write(tmp_path, case, econnect, procuros)
    for cmd in (["status"], ["run", "--until-idle"], ["requeue", f"kept-{case}"],
                ["send", "--provider", "econnect", str(doc)]):  # fmt: skip
        assert_one_line_error(run(["--config", str(bad), *cmd], tmp_path), *CASES[case][2])
    assert digest() == before
