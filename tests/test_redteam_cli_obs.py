"""Red team: the new CLI package, observability (otel, /metrics, JSON logs) and declared auth,
attacked as a new operator and as a hostile environment would.

Every attack goes over real HTTP on 127.0.0.1 (a hostile provider: a small local server that
answers what the test says) or runs the installed ``docrelay`` command. A test marked
``xfail(strict=True)`` is a break that is still open; its reason says what breaks. The others
are breaks fixed in the same commit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import docrelay
import pytest
import requests
from docrelay import DocState, Document, HttpRequest, Relay, Setting
from docrelay._serve import WebhookServer
from docrelay.auth import ApiKeyHeader
from docrelay.testing import FAST_ENGINE

pytest.importorskip("acme_testprovider")

from acme_testprovider import AcmePlugin

DOCRELAY = str(Path(sys.executable).with_name("docrelay"))
API_KEY = "ak-rtb-Hq4Vn8Rw2Ys6"


class Hostile:
    """A provider on 127.0.0.1 that answers every POST with :attr:`answer` (status, headers,
    body); ``/token`` gets a good token so OAuth providers reach the send."""

    def __init__(self) -> None:
        self.answer: tuple[int, dict[str, str], bytes] = (201, {}, b'{"id": "r-1"}')
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/token"):
                    status, headers = 200, {"Content-Type": "application/json"}
                    body = b'{"access_token": "tok-rtb-123456", "expires_in": 600}'
                else:
                    status, headers, body = owner.answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    h = Hostile()
    yield h
    h.close()


class KeyInPath(AcmePlugin):
    """A provider whose API takes its key in the URL path (``/v1/<key>/documents``), as some
    do, and in a header."""

    prepare_headers = None  # type: ignore[assignment]

    @docrelay.hookimpl
    def provider_info(self) -> docrelay.ProviderInfo:
        return attrs.evolve(
            super().provider_info(),
            hook_api=2,
            auth=ApiKeyHeader("X-Api-Key", "api_key"),
            settings=(Setting("api_key", secret=True),),
            credential_setting=None,
        )

    @docrelay.hookimpl
    def build_request(self, document: Document, ctx: docrelay.Context) -> HttpRequest:
        key = ctx.settings["api_key"]
        return HttpRequest("POST", f"/v1/{key}/documents", body=document.payload,
                           headers={"Content-Type": "application/json"})  # fmt: skip


def _rejected_by(hostile: Hostile, tmp_path: Path, message: str) -> Path:
    """A store holding one document the hostile provider rejected with *message*, and a
    configuration that reads it (no provider: the read-only commands need none)."""
    body = json.dumps({"message": message}).encode()
    hostile.answer = (422, {"Content-Type": "application/json"}, body)
    db = tmp_path / "d.db"
    with Relay(f"sqlite:///{db}", engine=dict(FAST_ENGINE), plugins=[AcmePlugin()],
               autoload=False, providers={"acme": {"base_url": hostile.url,
               "client_id": "cid", "client_secret": "cs-rtb-0123456789"}}) as relay:  # fmt: skip
        relay.submit(Document(id="X-1", provider="acme", payload=b"{}"))
        relay.run_until_idle()
        assert relay.status("X-1").state == DocState.REJECTED
    config = tmp_path / "docrelay.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n', encoding="utf-8")
    return config


# -- breaks, fixed ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["why", "X-1"], ["status", "X-1"]])
def test_provider_words_are_not_rich_markup_nor_terminal_escapes(
    hostile: Hostile, tmp_path: Path, command: list[str]
) -> None:
    """A provider's rejection text went into rich tables as markup: ``[/]`` made `status`
    and `why` fail with "internal error: MarkupError" (exit 2, half a page printed), a
    ``[link=...]`` became a hidden hyperlink, and ESC sequences (clear screen, set the
    window title) reached the operator's terminal raw. The words are shown as written."""
    words = "bad [/] value [link=https://evil.example/]portal[/link] \x1b[2J\x1b]0;pwned\x07 end"
    config = _rejected_by(hostile, tmp_path, words)

    p = subprocess.run([DOCRELAY, "--config", str(config), *command], check=False,
                       capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)  # fmt: skip

    assert p.returncode == 1, p.stderr
    assert "internal error" not in p.stderr
    assert "\x1b" not in p.stdout + p.stderr
    flat = " ".join(p.stdout.replace("│", " ").split())
    assert "[/]" in flat
    assert "[link=https://evil.example/]portal[/link]" in flat


def test_otel_span_url_path_masks_a_key_in_the_path(hostile: Hostile, tmp_path: Path) -> None:
    """The otel plugin put the request's URL path in ``url.path`` as it was: an API that
    takes its key in the path (``/v1/<key>/documents``) had the key in every exported
    span (the query string was left out, the path was not redacted)."""
    from docrelay_otel import OtelPlugin
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hostile.answer = (400, {"Content-Type": "application/json",
                            "X-Request-Id": "req-" + API_KEY},
                      json.dumps({"message": "refused " + API_KEY}).encode())  # fmt: skip
    try:
        with Relay(f"sqlite:///{tmp_path / 'd.db'}", engine=dict(FAST_ENGINE), autoload=False,
                   plugins=[KeyInPath(), OtelPlugin(tracer_provider, meter_provider)],
                   providers={"acme": {"base_url": hostile.url,
                                       "api_key": API_KEY}}) as relay:  # fmt: skip
            relay.submit(Document(id="K-1", provider="acme", payload=b"{}"))
            relay.run_until_idle()
        finished = spans.get_finished_spans()
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    assert finished
    (send,) = [s for s in finished if s.name == "docrelay send acme"]
    assert send.attributes["url.path"] == "/v1/***/documents"
    exported = json.dumps([json.loads(s.to_json()) for s in finished])
    assert API_KEY not in exported


def test_receiver_metrics_are_rate_limited_per_source(tmp_path: Path) -> None:
    """``GET /metrics`` on the internet-facing receiver reads the store at every scrape and
    was outside the per-source rate limit that guards ``/webhooks``: one outsider could make
    the store count every document as fast as it could ask. It now shares the limit (a
    Prometheus scraping every 15 s is far below it)."""
    relay = Relay(f"sqlite:///{tmp_path / 'd.db'}", autoload=False,
                  webhooks={"rate_limit": "3/60", "metrics": True})  # fmt: skip
    with relay, WebhookServer(relay.wsgi_app) as server:
        url = server.url.removesuffix("/webhooks") + "/metrics"
        codes = [requests.get(url, timeout=10).status_code for _ in range(6)]
        last = requests.get(url, timeout=10)

    assert codes[:3] == [200, 200, 200]
    assert 429 in codes[3:]
    assert last.status_code == 429
    assert int(last.headers["Retry-After"]) >= 1


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is *pid* (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_run_processes_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    """``docrelay run --processes 2`` killed with SIGKILL (the OOM killer, a container
    stop that does not wait) left its two worker processes running forever, unsupervised,
    re-parented to init, delivering with nobody to show or stop them. Each worker now
    stops, after the batch in hand, when the pipe its parent holds closes."""
    config = tmp_path / "docrelay.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n', encoding="utf-8")
    parent = subprocess.Popen([DOCRELAY, "--config", str(config), "run", "--processes", "2"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = _children(parent.pid)
        assert len(workers) == 2
        time.sleep(1.0)  # the workers are in their delivery loop
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert left == []
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_run_processes_says_when_a_worker_process_died(tmp_path: Path) -> None:
    """One worker of ``run --processes 2`` killed (the OOM killer): the parent went on with
    the other and, stopped, printed its summary as if nothing had happened. It now says
    which worker ended and how."""
    config = tmp_path / "docrelay.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n', encoding="utf-8")
    parent = subprocess.Popen([DOCRELAY, "--config", str(config), "run", "--processes", "2"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = _children(parent.pid)
        assert len(workers) == 2
        time.sleep(1.0)
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.5)
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=60)
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()

    assert f"worker process {workers[0]} was killed by signal 9" in err
    assert "Traceback" not in err


# -- breaks, open -----------------------------------------------------------------------------


def test_receiver_metrics_are_not_served_to_an_outsider_by_default(tmp_path: Path) -> None:
    """The webhook receiver served GET /metrics to anyone by default (make_wsgi_app(
    metrics=True), Relay.wsgi_app, `docrelay webhooks`): an outsider on the internet read
    which providers this ERP works with, its document volumes and failures per provider,
    and which providers are paused. The page is off on the receiver unless ``[webhooks]
    metrics = true`` asks for it (``docrelay run --metrics-port`` serves it on loopback)."""
    from werkzeug.test import Client

    with Relay(f"sqlite:///{tmp_path / 'd.db'}", autoload=False) as relay:
        client = Client(relay.wsgi_app)
        response = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    with Relay(f"sqlite:///{tmp_path / 'd.db'}", autoload=False,
               webhooks={"metrics": True}) as relay:  # fmt: skip
        asked = Client(relay.wsgi_app).get("/metrics")

    assert response.status_code in (403, 404)
    assert b"docrelay_" not in response.data
    assert asked.status_code == 200
    assert b"docrelay_store_up" in asked.data


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["why", b"\xff"], b""),
        (["status", b"a\xffb"], b""),
        (["status", "--provider", b"\xff"], b""),
        (["requeue", "-"], b"\xfe\xff\npo-1\n"),
    ],
)
def test_non_utf8_arguments_and_stdin_are_a_clear_usage_error(
    tmp_path: Path, args: list[str | bytes], stdin: bytes
) -> None:
    """Bytes that are not UTF-8 in an id, a --provider value or the ids `requeue -` reads
    ended as "internal error: UnicodeEncodeError: ... surrogates not allowed": the command
    blamed itself for the operator's input. They are a usage error naming the cause."""
    config = tmp_path / "docrelay.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n', encoding="utf-8")
    with Relay(f"sqlite:///{tmp_path / 'd.db'}", autoload=False):
        pass  # the store exists (read-only commands never create one)
    argv = [os.fsencode(DOCRELAY), b"--config", os.fsencode(config)]
    argv += [a if isinstance(a, bytes) else a.encode() for a in args]

    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False,
                       cwd=tmp_path)  # fmt: skip
    err = p.stderr.decode("utf-8", "replace")

    assert p.returncode == 2, err
    assert "internal error" not in err
    assert "UTF-8" in err
    assert len(err.strip().splitlines()) == 1


def test_run_processes_workers_log_as_the_parent_was_asked(tmp_path: Path) -> None:
    """``docrelay --log-format json -vv run --processes 2`` started its workers with neither
    option: the workers, which do every delivery, logged in text at WARNING only, so the
    JSON log had no line of any exchange and a worker's warning broke the JSON stream."""
    pytest.importorskip("docrelay_procuros")
    from docrelay_procuros.sandbox import ProcurosSandbox

    token = "rtb-procuros-token-4711"
    order = json.loads(
        Path(__file__)
        .parent.parent.joinpath("plugins/procuros/src/docrelay_procuros/samples/order.json")
        .read_text(encoding="utf-8")
    )
    with ProcurosSandbox(api_token=token) as sandbox:
        db = tmp_path / "d.db"
        config = tmp_path / "docrelay.toml"
        config.write_text(
            f'[store]\nurl = "sqlite:///{db}"\n[providers.procuros]\n'
            f'base_url = "{sandbox.url}"\napi_token = "${{RTB_PROCUROS_TOKEN}}"\n',
            encoding="utf-8",
        )
        settings = {"base_url": sandbox.url, "api_token": token}
        with Relay(f"sqlite:///{db}", providers={"procuros": settings}) as r:
            for i in range(4):
                order["header"]["orderIdentifier"] = f"LG-{i}"
                r.submit(Document(id=f"lg-{i}", provider="procuros", kind="order",
                                  payload=json.dumps(order).encode(),
                                  content_type="application/json"))  # fmt: skip
        p = subprocess.run(
            [DOCRELAY, "--config", str(config), "--log-format", "json", "-vv", "run",
             "--processes", "2", "--until-idle"],
            env={**os.environ, "RTB_PROCUROS_TOKEN": token}, cwd=tmp_path,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    text_lines = [line for line in p.stderr.splitlines()
                  if line.split(" ", 1)[0] in ("DEBUG", "INFO", "WARNING", "ERROR")]  # fmt: skip
    assert text_lines == []
    assert any(r["logger"].startswith("urllib3") for r in records)  # a worker's exchange
    assert token not in p.stderr


def test_run_elsewhere_with_docrelay_config_does_not_start_an_empty_store(
    tmp_path: Path,
) -> None:
    """A relative sqlite store URL (the default, sqlite:///docrelay.db) was resolved against
    the working directory, not the configuration file's: `DOCRELAY_CONFIG=/etc/docrelay/
    docrelay.toml docrelay run` from a cron job or a unit without WorkingDirectory= created
    an empty docrelay.db where it stood, said 'no documents', exited 0, and the queued
    documents of the real store were never sent. A relative path follows the file that
    names it: the run from elsewhere delivers the documents queued beside the file."""
    pytest.importorskip("docrelay_procuros")
    from docrelay_procuros.sandbox import ProcurosSandbox

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    token = "rtb-procuros-token-0815"
    order = json.loads(
        Path(__file__)
        .parent.parent.joinpath("plugins/procuros/src/docrelay_procuros/samples/order.json")
        .read_text(encoding="utf-8")
    )
    with ProcurosSandbox(api_token=token) as sandbox:
        (home / "docrelay.toml").write_text(
            '[store]\nurl = "sqlite:///docrelay.db"\n[providers.procuros]\n'
            f'base_url = "{sandbox.url}"\napi_token = "${{RTB_PROCUROS_TOKEN}}"\n'
        )
        settings = {"base_url": sandbox.url, "api_token": token}
        with Relay(f"sqlite:///{home / 'docrelay.db'}", providers={"procuros": settings}) as r:
            r.submit(Document(id="far-1", provider="procuros", kind="order",
                              payload=json.dumps(order).encode(),
                              content_type="application/json"))  # fmt: skip

        env = {**os.environ, "DOCRELAY_CONFIG": str(home / "docrelay.toml"),
               "RTB_PROCUROS_TOKEN": token}  # fmt: skip
        p = subprocess.run([DOCRELAY, "run", "--until-idle"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=60, check=False,
                           env=env)  # fmt: skip

    assert not (elsewhere / "docrelay.db").exists()
    assert p.returncode == 0, p.stderr
    with Relay(f"sqlite:///{home / 'docrelay.db'}", autoload=False) as r:
        assert r.status("far-1").state == DocState.DELIVERED
