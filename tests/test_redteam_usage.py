"""Red team: the product as a new operator, an ERP developer and a plugin author find it.

Everything runs the real ``docrelay`` script in subprocesses, against sandboxes on 127.0.0.1
(or the contract kit in a pytest subprocess), and judges outcomes, exit codes, stderr lines
and files on disk, never timings.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from docrelay_procuros.sandbox import ProcurosSandbox

DOCRELAY = Path(sys.executable).parent / "docrelay"
ROOT = Path(__file__).parents[1]
TOKEN = "procuros-sandbox-token"
GOOD = {
    "header": {
        "buyer": {"identifiers": [{"identifier": "4012345000009", "domain": "GS1"}]},
        "supplier": {"identifiers": [{"identifier": "4098765000002", "domain": "GS1"}]},
        "orderIdentifier": "PO-7001",
        "orderDate": "2026-05-14T08:30:00Z",
    },
    "items": [{"lineNumber": 1, "description": "Dinkelmehl", "quantity": 1}],
}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCRELAY_", "PROCUROS_"))}
    full.update(env or {})
    return subprocess.run([str(DOCRELAY), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120, check=False, input=stdin)  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("docrelay: error:"), lines[0]
    return lines[0]


@pytest.fixture
def procuros() -> Iterator[ProcurosSandbox]:
    sb = ProcurosSandbox()
    sb.start()
    yield sb
    sb.stop()


def procuros_config(tmp: Path, url: str, extra: str = "") -> Path:
    cfg = tmp / "docrelay.toml"
    cfg.write_text(
        f'[store]\nurl = "sqlite:///{tmp / "store.db"}"\n\n[providers.procuros]\n'
        f'base_url = "{url}"\napi_token = "${{PROCUROS_API_TOKEN}}"\n{extra}'
    )
    return cfg


# -- usage errors: one line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["send", "x.json"],  # no --provider
        ["nosuchcommand"],
        ["--config", "."],  # a directory for a file
        ["sandbox", "procuros", "--port", "99999"],
        ["new-plugin", "acme", "--directory", "afile"],
        ["status", "--state", "bogus"],
        ["send", "--provider", "procuros", "--workers", "0", "x.json"],
    ],
    ids=["missing-option", "unknown-command", "config-dir", "port-range", "dir-is-file",
         "bad-choice", "workers-range"],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    """docs/cli.md: a usage error is one line on stderr (``docrelay: error: ...``). Click's
    own errors printed a four-line "Usage: ... Try ... Error: ..." block instead."""
    (tmp_path / "afile").write_text("x")
    if args[:2] == ["--config", "."]:
        args = ["--config", str(tmp_path), "status"]
    line = one_error_line(run(args, tmp_path))
    assert "--help" in line, line  # says where to look
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_help_and_bare_command_still_show_help(tmp_path: Path) -> None:
    for args in (["--help"], ["send", "--help"], ["webhooks", "-h"]):
        proc = run(args, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Usage: docrelay"), proc.stdout
    bare = run([], tmp_path)
    assert "Usage: docrelay" in bare.stdout + bare.stderr
    assert "docrelay: error" not in bare.stdout + bare.stderr
    assert list(tmp_path.iterdir()) == []


# -- commands that look at documents never create a store ----------------------------------------


@pytest.mark.parametrize("args", [["status"], ["why", "PO-1"], ["requeue", "PO-1"],
                                  ["status", "PO-1"]])  # fmt: skip
def test_looking_in_the_wrong_place_creates_no_store(tmp_path: Path, args: list[str]) -> None:
    """An operator in the wrong directory (or with a typo in ``[store] url``) gets a new
    empty store file created there, and ``status`` answers an empty table with exit 0:
    "all fine". Expected: one line naming the missing store, exit 2, nothing created. (A
    check in cli.py before ``Relay.from_config`` would report a missing store before a bad
    provider setting, so the fix belongs where the store is opened: read-only there.)"""
    proc = run(args, tmp_path)
    assert list(tmp_path.iterdir()) == []
    line = one_error_line(proc)
    assert "store" in line, line


# -- exit codes of run --until-idle (cron) ------------------------------------------------------


def test_run_until_idle_exits_1_when_a_document_ends_rejected(
    tmp_path: Path, procuros: ProcurosSandbox
) -> None:
    """docs/deployment.md (cron): ``run --until-idle`` exits 1 when some documents ended
    rejected or failed, so cron mails it. It always exited 0."""
    import docrelay

    cfg = procuros_config(tmp_path, procuros.url)
    env = {"PROCUROS_API_TOKEN": TOKEN}
    bad = json.loads(json.dumps(GOOD))
    del bad["header"]["supplier"]["identifiers"]
    with docrelay.Relay(f"sqlite:///{tmp_path / 'store.db'}",
                        providers={"procuros": {"base_url": procuros.url,
                                                "api_token": TOKEN}}) as relay:  # fmt: skip
        relay.submit(docrelay.Document(id="PO-bad", provider="procuros", kind="order",
                                       payload=json.dumps(bad).encode(),
                                       content_type="application/json"))  # fmt: skip
    proc = run(["--config", str(cfg), "run", "--until-idle"], tmp_path, env)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "PO-bad" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A second run handles nothing: nothing new ended badly, exit 0.
    again = run(["--config", str(cfg), "run", "--until-idle"], tmp_path, env)
    assert again.returncode == 0, again.stderr
    # A good document delivered by a run: exit 0.
    (tmp_path / "PO-good.json").write_text(json.dumps(GOOD))
    with docrelay.Relay(f"sqlite:///{tmp_path / 'store.db'}",
                        providers={"procuros": {"base_url": procuros.url,
                                                "api_token": TOKEN}}) as relay:  # fmt: skip
        relay.submit(docrelay.Document(id="PO-good", provider="procuros", kind="order",
                                       payload=json.dumps(GOOD).encode(),
                                       content_type="application/json"))  # fmt: skip
    ok = run(["--config", str(cfg), "run", "--until-idle"], tmp_path, env)
    assert ok.returncode == 0, ok.stderr


# -- one provider's missing secret blocks every command ------------------------------------------


def test_an_unused_providers_missing_secret_does_not_block_the_others(
    tmp_path: Path, procuros: ProcurosSandbox
) -> None:
    """docs/deployment.md: secrets live in the service's EnvironmentFile; an operator runs
    ``docrelay status``/``why`` with the same configuration. With eConnect's secret not in
    that shell, nothing about Procuros' documents can be looked at or sent."""
    cfg = procuros_config(
        tmp_path,
        procuros.url,
        '\n[providers.econnect]\nbase_url = "http://127.0.0.1:9"\nclient_id = "c"\n'
        'client_secret = "${RT3_ECONNECT_SECRET_NOT_SET}"\nparty_id = "NL:KVK:12345678"\n',
    )
    (tmp_path / "PO-7001.json").write_text(json.dumps(GOOD))
    env = {"PROCUROS_API_TOKEN": TOKEN}
    sent = run(["--config", str(cfg), "send", "--provider", "procuros", "--kind", "order",
                str(tmp_path / "PO-7001.json")], tmp_path, env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert run(["--config", str(cfg), "status"], tmp_path, env).returncode == 0
    assert run(["--config", str(cfg), "why", "PO-7001"], tmp_path, env).returncode == 0


# -- docs say what the code does --------------------------------------------------------------


def test_docs_agree_that_accepted_is_not_done() -> None:
    """The exit-code table: ``accepted`` is pending (3), never good (0). docs/cli.md and
    getting-started.md once said exit 0 "when every document shown is delivered, duplicate,
    no_action or accepted"."""
    from docrelay.cli import EXIT_CODES

    table = dict(EXIT_CODES)
    assert "accepted" not in table[0]
    assert "accepted" in table[3]
    for page in ("docs/cli.md", "docs/getting-started.md"):
        text = " ".join((ROOT / page).read_text().split())
        m = re.search(r"`0`[^`]*?(delivered, duplicate, no_action)[^`]*`1`", text)
        assert m, page
        assert "accepted" not in m.group(0), (page, m.group(0))
        m3 = re.search(r"`3`(.*?)`2`", text)
        assert m3, page
        assert "accepted" in m3.group(1), page


def test_deployment_names_the_secret_path_of_the_webhook_receiver() -> None:
    """docs/deployment.md described ``POST /webhooks/<provider>`` and a plain ``docrelay
    webhooks``, which refuses to start without a webhook_secret (docs/webhooks.md)."""
    text = (ROOT / "docs/deployment.md").read_text()
    assert "POST /webhooks/<provider>`" not in text
    assert "/webhooks/<provider>/<secret>" in text
    assert "webhook_secret" in text


# -- the AQI sandbox's callback reaches `docrelay webhooks` --------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_aqi_callback_reaches_docrelay_webhooks(tmp_path: Path) -> None:
    """As docs/webhooks.md says: a secret from the environment, the callback registered with
    AQI, ``send`` exits 3 while accepted, the sandbox's own notification makes it delivered
    and ``status`` exits 0. (Held.)"""
    from docrelay_aqi import sample
    from docrelay_aqi.sandbox import AqiSandbox

    secret = "whsec-rt3-" + "q" * 20
    port = _free_port()
    sb = AqiSandbox(seed=3).start()
    try:
        cfg = tmp_path / "docrelay.toml"
        cfg.write_text(
            f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n[providers.aqi]\n'
            f'base_url = "{sb.url}"\nsubscription_key = "${{AQI_SUBSCRIPTION_KEY}}"\n'
            f'webhook_secret = "${{AQI_WEBHOOK_SECRET}}"\n[webhooks]\nport = {port}\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
        env.update(AQI_SUBSCRIPTION_KEY="aqi-sandbox-key", AQI_WEBHOOK_SECRET=secret)
        receiver = subprocess.Popen([str(DOCRELAY), "--config", str(cfg), "webhooks"],
                                    env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert receiver.stderr is not None
            first = receiver.stderr.readline()
            assert f"127.0.0.1:{port}/webhooks/<provider>/<secret>" in first, first
            reg = requests.post(
                f"{sb.url}/administration/v1/notification-callbacks",
                json={"callbackUrl": f"http://127.0.0.1:{port}/webhooks/aqi/{secret}",
                      "notificationTypes": ["accounting/EDIErrorSent"]},
                headers={"X-Subscription-Key": "aqi-sandbox-key"}, timeout=10,
            )  # fmt: skip
            assert reg.status_code == 200, reg.text
            (tmp_path / "order-1.json").write_bytes(sample("order"))
            sent = subprocess.run(
                [str(DOCRELAY), "--config", str(cfg), "send", "--provider", "aqi", "--kind",
                 "order", "--meta", "customer_number=TFI2021072801", "--meta",
                 "business_code=1000", "--json", str(tmp_path / "order-1.json")],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            # 3: accepted, the answer is to come; 0: the callback (~0.05 s) came before send ended
            assert sent.returncode in (0, 3), sent.stderr
            assert json.loads(sent.stdout)[0]["state"] == (
                "accepted" if sent.returncode else "delivered"
            )
            states: list[Any] = []
            for _ in range(200):  # bounded: the callback comes after ~0.05 s
                st = subprocess.run([str(DOCRELAY), "--config", str(cfg), "status", "--json"],
                                    env=env, capture_output=True, text=True, timeout=60,
                                    check=False)  # fmt: skip
                states = [d["state"] for d in json.loads(st.stdout)]
                if states != ["accepted"]:
                    break
                time.sleep(0.1)
            assert states == ["delivered"], states
            assert st.returncode == 0, st.stderr
        finally:
            receiver.terminate()
            _, tail = receiver.communicate(timeout=60)
        assert "Traceback" not in tail
        assert secret not in tail
        assert re.search(r"notifications aqi: 1 stored, 0 for no known document", tail), tail
        notes = requests.get(f"{sb.url}/_sandbox/notifications", timeout=10).json()
        assert [n["status"] for n in notes["notifications"]] == [200]
    finally:
        sb.stop()


# -- the contract kit -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from docrelay._scaffold import new_plugin

    target, _ = new_plugin("rtkit", tmp_path_factory.mktemp("kit") / "docrelay-rtkit")
    return target


def _mutant(generated: Path, tmp: Path, old: str, new: str) -> Path:
    import shutil

    target = tmp / "mutant"
    shutil.copytree(generated, target)
    for path in (target / "src/docrelay_rtkit").glob("*.py"):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new, 1))
            return target
    raise AssertionError(f"{old!r} is in no module of the generated plugin")


@pytest.mark.parametrize(
    ("old", "new", "caught_by"),
    [
        ("return Outcome(kind=OutcomeKind.DUPLICATE", "return Outcome(kind=OutcomeKind.DELIVERED",
         "test_duplicate_answer_is_duplicate"),
        ('field_errors=field_errors(body.get("errors")),', "field_errors=(),",
         "test_rejection_keeps_field_errors_and_links"),
        ("if response is not None else None",
         'if response is not None else Outcome(kind="retry", message="broken")',
         "test_transport_error_after_send_is_unknown"),
    ],
    ids=["409-as-delivered", "drops-field-errors", "sent-error-as-retry"],
)  # fmt: skip
def test_the_kit_catches_a_broken_classifier(
    generated: Path, tmp_path: Path, old: str, new: str, caught_by: str
) -> None:
    """The generated plugin's own contract test fails, naming the right check. (Held.)"""
    plugin = _mutant(generated, tmp_path, old, new)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    env["PYTHONPATH"] = str(plugin / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(plugin / "tests/test_contract.py")],
        cwd=plugin, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    failed = re.findall(r"FAILED \S+::(\w+)", proc.stdout)
    assert failed == [caught_by], proc.stdout[-3000:]


def test_the_kit_refuses_overrides_that_hide_a_failure() -> None:
    """The docs ask for ``xfail(strict=True, reason=...)`` on an override. The guard took a
    non-strict xfail (the override passes: XPASS, the suite green) and missed an override
    brought in by a mixin (it looked at the subclass's own namespace only)."""
    from docrelay.testing import ProviderContractTests

    with pytest.raises(TypeError, match="strict=True"):

        class TestLoose(ProviderContractTests):
            @pytest.mark.xfail(reason="differs")
            def test_duplicate_answer_is_duplicate(self) -> None:
                pass

    class Quiet:
        def test_rejection_keeps_field_errors_and_links(self) -> None:
            pass

    with pytest.raises(TypeError, match="test_rejection_keeps_field_errors_and_links"):

        class TestMixin(Quiet, ProviderContractTests):
            pass

    class TestStrict(ProviderContractTests):  # the documented way still works
        @pytest.mark.xfail(strict=True, reason="differs")
        def test_duplicate_answer_is_duplicate(self) -> None:
            raise AssertionError

    class TestChild(TestStrict):  # and is inherited
        pass

    assert TestChild.test_duplicate_answer_is_duplicate is not None


@pytest.mark.parametrize("name", ["procuros", "econnect"])
def test_new_plugin_refuses_the_name_of_an_installed_plugin(tmp_path: Path, name: str) -> None:
    """``docrelay new-plugin procuros`` wrote ``docrelay-procuros`` with the entry point
    ``procuros``: the tutorial's next step (``pip install -e``) replaces the shipped Procuros
    plugin with the template's imaginary API. Now one line, exit 2, nothing written."""
    line = one_error_line(run(["new-plugin", name], tmp_path))
    assert "installed" in line, line
    assert list(tmp_path.iterdir()) == []
