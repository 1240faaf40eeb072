"""Operators' view (issue 14, part 2): ``/metrics`` scraped over HTTP from the webhook server
and from ``docrelay run --metrics-port``, and ``--log-format json`` lines, redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from docrelay import Document, Relay
from docrelay._logging import bind_document, configure_logging, unbind_document
from docrelay._redact import register_secret, secrets_scope
from docrelay._serve import WebhookServer
from docrelay_siesmart.sandbox import SieSmartSandbox
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from test_redaction import load_echo

DOCRELAY = str(Path(sys.executable).with_name("docrelay"))
FAST = {"retry_wait_initial": 0.01, "retry_wait_max": 0.05, "deferral_initial": 0.05,
        "read_timeout": 5.0}  # fmt: skip
PROPOSAL = {
    "officeId": "OFF-DE-1001",
    "salesContactId": "SC-DE-0417",
    "label": "Kessler excavator",
    "customer": {"companyName": "Kessler GmbH"},
    "assets": [{"iacCode": "IAC-2210", "description": "Crawler excavator"}],
    "calculation": {"termMonths": 48},
}


def proposal(doc_id: str) -> Document:
    payload = json.dumps(PROPOSAL).encode()
    return Document(id=doc_id, provider="siesmart", kind="proposal",
                    content_type="application/json", payload=payload)  # fmt: skip


@pytest.fixture
def sandbox() -> Iterator[SieSmartSandbox]:
    sb = SieSmartSandbox()
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


def settings(sb: SieSmartSandbox) -> dict[str, Any]:
    return {"base_url": sb.url, "client_id": sb.config["client_id"],
            "client_secret": sb.config["client_secret"], "rate_limit": "1000/1"}  # fmt: skip


def samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_on_the_webhook_server(tmp_path: Path, sandbox: SieSmartSandbox) -> None:
    """``GET /metrics`` (``[webhooks] metrics = true``): the queue depth per provider and state
    from the store, and the otel plugin's metrics (installed here, so its Prometheus fallback
    is in the page)."""
    with Relay("sqlite:///" + str(tmp_path / "d.db"), providers={"siesmart": settings(sandbox)},
               engine=FAST, webhooks={"metrics": True}) as relay:  # fmt: skip
        relay.submit(proposal("m-1"))
        relay.submit(proposal("m-2"))
        relay.run_until_settled(timeout=10)
        relay.submit(proposal("m-3"))  # queued, not run
        with WebhookServer(relay.wsgi_app) as server:
            url = server.url.removesuffix("/webhooks") + "/metrics"
            response = requests.get(url, timeout=5)
            refused = requests.post(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    page = samples(response.text)
    depth = "docrelay_queue_documents"
    assert page[(depth, (("provider", "siesmart"), ("state", "delivered")))] == 2
    assert page[(depth, (("provider", "siesmart"), ("state", "queued")))] == 1
    assert page[(depth, (("provider", "siesmart"), ("state", "failed")))] == 0
    assert page[("docrelay_store_up", ())] == 1
    attempts = {k: v for k, v in page.items() if k[0] == "docrelay_delivery_attempts_total"}
    assert any(dict(labels).get("provider") == "siesmart" for _, labels in attempts)
    assert any(k[0] == "docrelay_exchange_duration_seconds_count" for k in page)
    assert refused.status_code in (404, 405)


def test_docrelay_run_serves_metrics_and_logs_json(
    tmp_path: Path, sandbox: SieSmartSandbox
) -> None:
    """``docrelay --log-format json -v run --metrics-port 0``: the page shows the documents
    delivered by this worker; every log line on stderr is one JSON object."""
    db = tmp_path / "d.db"
    with Relay(f"sqlite:///{db}", providers={"siesmart": settings(sandbox)}) as relay:
        for i in range(3):
            relay.submit(proposal(f"r-{i}"))
    config = tmp_path / "docrelay.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n[providers.siesmart]\nbase_url = "{sandbox.url}"\n'
        f'client_id = "{sandbox.config["client_id"]}"\nclient_secret = "${{RUN_SECRET}}"\n'
        'rate_limit = "1000/1"\n'
    )
    env = {**os.environ, "RUN_SECRET": sandbox.config["client_secret"]}
    proc = subprocess.Popen(
        [DOCRELAY, "--config", str(config), "--log-format", "json", "-v", "run",
         "--metrics-port", "0"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = None
        lines = []
        while url is None:
            line = proc.stderr.readline()
            assert line, "docrelay run ended before serving metrics"
            lines.append(line)
            found = re.search(r"metrics on (http://\S+/metrics)", line)
            url = found.group(1) if found else None
        delivered = 0.0
        deadline = time.monotonic() + 30
        while delivered < 3 and time.monotonic() < deadline:
            page = samples(requests.get(url, timeout=5).text)
            delivered = page.get(
                ("docrelay_queue_documents", (("provider", "siesmart"), ("state", "delivered"))),
                0.0,
            )
            time.sleep(0.05)
        assert delivered == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=15)
    assert proc.returncode == 0, rest
    logs = [
        line for line in "".join(lines).splitlines() + rest.splitlines() if line.startswith("{")
    ]
    assert logs, "the worker logged nothing at -v"
    for line in logs:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys()
    assert "Traceback" not in rest
    assert sandbox.config["client_secret"] not in "".join(lines) + rest


def test_json_log_lines_leak_no_secret_in_any_encoding() -> None:
    """A secret with a quote, a backslash, a slash, non-ASCII text and a newline, logged raw,
    JSON-escaped, URL-encoded, base64-encoded, as an argument and in a traceback: every line
    is one JSON object and no encoded form of the secret is in the output."""
    secret = f'js"on\\se/cr é😀\nt-{uuid.uuid4().hex[:8]}'
    forms = {k: v for k, v in load_echo().forms(secret).items() if len(v) >= 6}
    stream = io.StringIO()
    log = logging.getLogger("docrelay.test.json")
    root = logging.getLogger()
    level = root.level
    with secrets_scope():
        register_secret(secret)
        handler = configure_logging(logging.DEBUG, "json", stream=stream)
        try:
            bind_document("doc-7", "siesmart")
            for name, form in forms.items():
                log.warning("form %s: %s", name, form)
                log.info(f"inline {name}: {form}")
            try:
                raise ValueError(f"refused {secret} / {json.dumps(secret)}")
            except ValueError:
                log.exception("with a traceback")
            unbind_document()
            log.error("after unbinding %s", json.dumps({"token": secret}))
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    output = stream.getvalue()
    lines = output.splitlines()
    assert len(lines) == 2 * len(forms) + 2
    records = [json.loads(line) for line in lines]
    assert records[0]["document_id"] == "doc-7"
    assert records[0]["provider"] == "siesmart"
    assert "document_id" not in records[-1]
    assert "ValueError" in records[-2]["exception"]
    leaked = sorted(name for name, form in forms.items() if form in output)
    decoded = "\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    leaked += sorted(f"decoded {name}" for name, form in forms.items() if form in decoded)
    assert leaked == []


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_queue_depth_is_counted_by_the_store(tmp_path: Path, backend: str) -> None:
    """``Relay.queue_depth()`` (what ``/metrics`` shows) groups by provider and state in the
    store's own SQL, on both stores."""
    from docrelay import open_store

    if backend == "sqlite":
        store = open_store("sqlite:///" + str(tmp_path / "q.db"))
        cleanup = None
    else:
        url = os.environ.get("DOCRELAY_TEST_PG_URL")
        if not url:
            if os.environ.get("DOCRELAY_REQUIRE_PG") == "1":
                pytest.fail("DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set")
            pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
        import psycopg

        schema = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        store = open_store(url, schema=schema, heartbeat=False)

        def cleanup() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    try:
        now = time.time()
        for i in range(3):
            store.submit(proposal(f"q-{i}"), now)
        other = Document(id="o-1", provider="procuros", kind="order",
                         content_type="application/json", payload=b"{}")  # fmt: skip
        store.submit(other, now)
        with Relay(store, autoload=False) as relay:
            assert relay.queue_depth() == {"procuros": {"queued": 1}, "siesmart": {"queued": 3}}
    finally:
        store.close()
        if cleanup is not None:
            cleanup()
