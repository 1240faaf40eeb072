"""``docrelay webhooks``: refuses to start without a secret, ``--insecure`` only on loopback,
served by waitress, and its own log lines never show the secret path segment."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox

DOCRELAY = Path(sys.executable).parent / "docrelay"
SECRET = "whsec-cli-5e0c93aa71"


def _config(tmp: Path, sandbox_url: str, secret: bool) -> Path:
    cfg = tmp / "docrelay.toml"
    text = (
        f'[store]\nurl = "sqlite:///{tmp / "w.db"}"\n'
        f'[providers.aqi]\nbase_url = "{sandbox_url}"\nsubscription_key = "${{AQI_KEY}}"\n'
    )
    if secret:
        text += 'webhook_secret = "${AQI_WEBHOOK_SECRET}"\n'
    cfg.write_text(text)
    return cfg


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    env.update(AQI_KEY="aqi-sandbox-key", AQI_WEBHOOK_SECRET=SECRET)
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DOCRELAY), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def sandbox() -> AqiSandbox:
    sb = AqiSandbox(seed=1).start()
    yield sb  # type: ignore[misc]
    sb.stop()


def test_refuses_to_start_without_a_secret(tmp_path: Path, sandbox: AqiSandbox) -> None:
    """No webhook_secret: one line, exit 2; --insecure is refused on a non-loopback address."""
    cfg = _config(tmp_path, sandbox.url, secret=False)

    plain = _run(["--config", str(cfg), "webhooks", "--port", "0"], tmp_path)
    wide = _run(["--config", str(cfg), "webhooks", "--insecure", "--host", "192.0.2.1"], tmp_path)

    for proc in (plain, wide):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "webhook_secret" in plain.stderr
    assert "loopback" in wide.stderr
    assert not (tmp_path / "w.db").exists() or plain.stdout == ""


def _serve(cfg: Path, cwd: Path, *extra: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen([str(DOCRELAY), "-v", "--config", str(cfg), "webhooks", "--port",
                             "0", *extra], cwd=cwd, env=_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/webhooks", line)
        if m:
            return proc, m.group(1), lines
    raise AssertionError("".join(lines))


def _stop(proc: subprocess.Popen[str], lines: list[str]) -> str:
    """SIGTERM, then everything the server wrote (read through the same buffered pipe that
    ``_serve`` read from, so no line is lost)."""
    assert proc.stderr is not None
    assert proc.stdout is not None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    with proc.stderr, proc.stdout:
        return "".join(lines) + proc.stderr.read() + proc.stdout.read()


def test_served_by_waitress_and_the_log_hides_the_secret(
    tmp_path: Path, sandbox: AqiSandbox
) -> None:
    """With a secret: notifications over HTTP are applied, the access log (shown with -v)
    names the path as /webhooks/aqi/<secret>, and the secret appears nowhere."""
    from docrelay import Relay

    cfg = _config(tmp_path, sandbox.url, secret=True)
    env = _env()
    with Relay(f"sqlite:///{tmp_path / 'w.db'}", providers={"aqi": {
            "base_url": sandbox.url, "subscription_key": env["AQI_KEY"]}}) as relay:  # fmt: skip
        relay.submit(sample_document("order-1", "order", "order"))
        relay.run_until_idle()
        key = relay.status("order-1").key
    proc, base, lines = _serve(cfg, tmp_path)
    try:
        note = {"type": "accounting/EDIErrorSent", "parameters": {"requestType": "GET_ORDER",
                "transactionId": key, "details": {"orderNo": "ODE2024100001", "result": "OK",
                                                  "errorDetails": []}}}  # fmt: skip
        wrong = requests.post(f"{base}/webhooks/aqi/not-it", json=note, timeout=10)
        ok = requests.post(f"{base}/webhooks/aqi/{SECRET}", json=note, timeout=10)
        chunked = requests.post(f"{base}/webhooks/aqi/{SECRET}",
                                data=iter([b'{"type": "x"', b"}"]), timeout=10)  # fmt: skip
        unknown = requests.post(f"{base}/webhooks/nope/{SECRET}", json=note, timeout=10)
    finally:
        output = _stop(proc, lines)

    assert wrong.status_code == 403
    assert (ok.status_code, ok.json()["status"]) == (200, "applied")
    assert (chunked.status_code, chunked.json()["status"]) == (200, "ignored")
    assert unknown.status_code == 404
    assert "Traceback" not in output
    assert SECRET not in output
    assert '"POST /webhooks/aqi/<secret>" 200' in output
    assert "not-it" not in output
    assert re.search(r"notifications aqi: \d+ stored, 1 for no known document", output), output
    with Relay(f"sqlite:///{tmp_path / 'w.db'}", providers={"aqi": {
            "base_url": sandbox.url, "subscription_key": env["AQI_KEY"]}}) as relay:  # fmt: skip
        assert relay.status("order-1").state.value == "delivered"


def test_insecure_on_loopback_warns_and_serves(tmp_path: Path, sandbox: AqiSandbox) -> None:
    """--insecure on 127.0.0.1: a warning, then notifications without a secret are taken."""
    cfg = _config(tmp_path, sandbox.url, secret=False)
    proc, base, lines = _serve(cfg, tmp_path, "--insecure")
    try:
        answer = requests.post(f"{base}/webhooks/aqi", json={"type": "x"}, timeout=10)
    finally:
        output = _stop(proc, lines)

    assert "WARNING: --insecure" in output
    assert (answer.status_code, answer.json()["status"]) == (200, "ignored")
