"""docrelay-otel end to end: real loopback HTTP against the SieSmart and eBillingHub
sandboxes, spans and metrics read from the OpenTelemetry SDK's in-memory exporters."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from docrelay import DocState, Document, Relay
from docrelay_ebh.sandbox import EbhSandbox
from docrelay_otel import OtelPlugin, document_trace_id
from docrelay_siesmart.sandbox import SieSmartSandbox
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF


class Telemetry:
    """An OtelPlugin wired to in-memory exporters."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.plugin = OtelPlugin(self.tracer_provider, self.meter_provider)

    def finished(self, doc_id: str | None = None) -> list[Any]:
        spans = sorted(self.spans.get_finished_spans(), key=lambda s: s.start_time or 0)
        if doc_id is None:
            return spans
        return [s for s in spans if s.attributes.get("docrelay.document.id") == doc_id]

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Data points of metric *name*, by their sorted attributes."""
        out: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        for p in metric.data.data_points:
                            out[tuple(sorted(p.attributes.items()))] = p
        return out

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture(scope="module")
def siesmart_server() -> Iterator[SieSmartSandbox]:
    sb = SieSmartSandbox()
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def siesmart(siesmart_server: SieSmartSandbox) -> SieSmartSandbox:
    siesmart_server.config.update(SieSmartSandbox.options)
    siesmart_server.set_faults([])
    siesmart_server.reset()
    return siesmart_server


@pytest.fixture(scope="module")
def ebh_server() -> Iterator[EbhSandbox]:
    sb = EbhSandbox()
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def ebh(ebh_server: EbhSandbox) -> EbhSandbox:
    ebh_server.set_faults([])
    for name, default in EbhSandbox.options.items():
        ebh_server.set_option(name, default)
    ebh_server.reset()
    return ebh_server


FAST = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.05,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.1,
    "poll_initial": 0.01,
    "poll_max": 0.05,
    "read_timeout": 2.0,
    "pause_seconds": 0.0,
}
PROPOSAL = {
    "officeId": "OFF-DE-1001",
    "salesContactId": "SC-DE-0417",
    "label": "Kessler excavator",
    "customer": {"companyName": "Kessler GmbH"},
    "assets": [{"iacCode": "IAC-2210", "description": "Crawler excavator"}],
    "calculation": {"termMonths": 48},
}


def proposal(doc_id: str) -> Document:
    return Document(id=doc_id, provider="siesmart", kind="proposal",
                    content_type="application/json",
                    payload=json.dumps(PROPOSAL).encode())  # fmt: skip


def siesmart_relay(tmp_path: Path, sb: SieSmartSandbox, plugin: object, **settings: Any) -> Relay:
    cfg = {
        "base_url": sb.url,
        "client_id": sb.config["client_id"],
        "client_secret": sb.config["client_secret"],
        "rate_limit": "1000/1",
        **settings,
    }
    return Relay(store="sqlite:///" + str(tmp_path / "d.db"), providers={"siesmart": cfg},
                 engine=FAST, plugins=[plugin], disabled=["otel"])  # fmt: skip


def attrs_of(spans: list[Any], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(s.attributes.get(n) for n in names) for s in spans]


def test_a_retry_then_delivered_is_one_trace(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    """A 500 then a 200: two send spans (attempts 1 and 2, outcomes retry and delivered,
    the status codes and the provider's X-B2B-TRACE-ID), in the document's own trace."""
    with siesmart_relay(tmp_path, siesmart, telemetry.plugin) as relay:
        relay.submit(proposal("warm"))  # fetches the token first
        relay.run_until_settled(timeout=10)
        siesmart.set_faults(["error*1:500"])
        relay.submit(proposal("p-1"))
        relay.run_until_settled(timeout=10)
        assert relay.status("p-1").state == DocState.DELIVERED

    spans = telemetry.finished("p-1")
    assert attrs_of(spans, "docrelay.purpose", "docrelay.attempt", "docrelay.outcome",
                    "http.response.status_code") == [
        ("send", 1, "retry", 500),
        ("send", 2, "delivered", 200),
    ]  # fmt: skip
    trace_id, root = document_trace_id("siesmart", "p-1", proposal("p-1").revision)
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert {s.parent.span_id for s in spans} == {root}
    request_ids = [s.attributes["docrelay.provider.request_id"] for s in spans]
    assert all(request_ids)
    assert len(set(request_ids)) == 2
    assert all(s.name == "docrelay send siesmart" for s in spans)
    assert all(s.attributes["url.path"].startswith("/proposals") for s in spans)
    # The warm-up document's send fetched the token: the token span is the send's child.
    # (The order the two end in is not the contract: group commit may tell them in either.)
    by_purpose = {sp.attributes["docrelay.purpose"]: sp for sp in telemetry.finished("warm")}
    assert sorted(by_purpose) == ["send", "token"]
    send, token = by_purpose["send"], by_purpose["token"]
    assert token.parent.span_id == send.context.span_id
    assert token.context.trace_id == send.context.trace_id


def test_metrics_count_attempts_retries_deliveries_and_latency(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    with siesmart_relay(tmp_path, siesmart, telemetry.plugin) as relay:
        telemetry.plugin.observe_store(relay)
        relay.submit(proposal("warm"))
        relay.run_until_settled(timeout=10)
        siesmart.set_faults(["error*1:500"])
        relay.submit(proposal("p-2"))
        relay.run_until_settled(timeout=10)
        attempts = telemetry.points("docrelay.delivery.attempts")
        retries = telemetry.points("docrelay.retries")
        deliveries = telemetry.points("docrelay.deliveries")
        duration = telemetry.points("docrelay.exchange.duration")
        store = telemetry.points("docrelay.store.documents")

    p = ("provider", "siesmart")
    assert attempts[(("outcome", "delivered"), p)].value == 2
    assert attempts[(("outcome", "retry"), p)].value == 1
    assert retries[(("outcome", "retry"), p)].value == 1
    assert deliveries[(p, ("state", "delivered"))].value == 2
    assert duration[(p, ("purpose", "send"))].count == 3
    assert duration[(p, ("purpose", "token"))].count == 1
    assert store[(p, ("state", "delivered"))].value == 2


def test_rate_limit_waits_are_measured(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    """Three sends under a client-side limit of 2 per second: the third waits for its slot,
    and the wait is in the span and in docrelay.rate_limit.wait."""
    with siesmart_relay(tmp_path, siesmart, telemetry.plugin, rate_limit="2/1") as relay:
        for i in range(3):
            relay.submit(proposal(f"r-{i}"))
        relay.run_until_settled(timeout=20)
        waits = telemetry.points("docrelay.rate_limit.wait")
    assert waits[(("provider", "siesmart"),)].value > 0
    assert any(s.attributes["docrelay.rate_limit.wait_s"] > 0 for s in telemetry.finished())


def test_traceparent_only_where_the_provider_allows_it(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    """Off by default; with ``trace_context = true`` the send carries the traceparent of its
    own span (the token request does not: it is not a delivery)."""
    with siesmart_relay(tmp_path, siesmart, telemetry.plugin) as relay:
        relay.submit(proposal("t-off"))
        relay.run_until_settled(timeout=10)
    assert not any("traceparent" in {k.lower() for k in r["headers"]} for r in siesmart.requests)

    siesmart.reset()
    with siesmart_relay(tmp_path, siesmart, telemetry.plugin, trace_context=True) as relay:
        relay.submit(proposal("t-on"))
        relay.run_until_settled(timeout=10)
    # The sandbox's reset dropped the token the store still caches: a 401, a new token, a
    # resend. Each send names its own span; the token request carries no traceparent.
    spans = [s for s in telemetry.finished("t-on") if s.attributes["docrelay.purpose"] == "send"]
    assert [s.attributes["docrelay.outcome"] for s in spans] == ["reauth", "delivered"]
    sent = [
        {k.lower(): v for k, v in r["headers"].items()}.get("traceparent")
        for r in siesmart.requests
    ]
    assert sent == [
        f"00-{spans[0].context.trace_id:032x}-{spans[0].context.span_id:016x}-01",
        None,
        f"00-{spans[1].context.trace_id:032x}-{spans[1].context.span_id:016x}-01",
    ]
    assert [r["path"] for r in siesmart.requests] == ["/proposals", "/oauth/token", "/proposals"]
    reauths = telemetry.points("docrelay.reauths")
    assert reauths[(("provider", "siesmart"),)].value == 1


def test_polls_are_spans_of_the_same_trace(
    tmp_path: Path, ebh: EbhSandbox, telemetry: Telemetry
) -> None:
    """eBillingHub validates asynchronously: one send span (accepted), then one span per
    poll (numbered), the last delivered; all in the document's trace."""
    payload = resources.files("docrelay_ebh").joinpath("samples", "ubf_invoice_ok.xml")
    doc = Document(id="inv-1", provider="ebh", kind="invoice", content_type="application/xml",
                   payload=payload.read_bytes())  # fmt: skip
    cfg = {"base_url": ebh.url, "producer_id": "FIRM-0042", "provider_key": "sandbox-provider-key"}
    with Relay(store="sqlite:///" + str(tmp_path / "e.db"), providers={"ebh": cfg}, engine=FAST,
               plugins=[telemetry.plugin], disabled=["otel"]) as relay:  # fmt: skip
        relay.submit(doc)
        relay.run_until_settled(timeout=10)
        assert relay.status("inv-1").state == DocState.DELIVERED
    spans = telemetry.finished("inv-1")
    assert attrs_of(spans, "docrelay.purpose", "docrelay.attempt", "docrelay.outcome") == [
        ("send", 1, "accepted"),
        ("poll", 1, "accepted"),
        ("poll", 2, "accepted"),
        ("poll", 3, "delivered"),
    ]
    assert len({s.context.trace_id for s in spans}) == 1


class _Exploding(OtelPlugin):
    def on_exchange(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        raise RuntimeError("observer broke")

    def on_state_change(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        raise RuntimeError("observer broke")


class _FailingExporter:
    def export(self, spans: Any) -> Any:
        raise OSError("collector unreachable")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def _run_once(tmp_path: Path, sb: SieSmartSandbox, plugin: object, name: str) -> list[Any]:
    sb.reset()
    sb.set_faults(["error*1:500"])
    (tmp_path / name).mkdir()
    with siesmart_relay(tmp_path / name, sb, plugin) as relay:
        relay.submit(proposal("iso"))
        relay.run_until_settled(timeout=10)
        st = relay.status("iso")
        history = [(a.action, a.outcome.kind.value) for a in relay.history("iso") if a.outcome]
        return [st.state, st.attempts, history]


@pytest.mark.parametrize("broken", ["raising-hooks", "failing-exporter"])
def test_a_broken_observer_never_changes_a_document_state(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry, broken: str
) -> None:
    """The same delivery (a 500, then 200) with a working plugin and with a broken one ends
    the same way: state, attempts and history."""
    expected = _run_once(tmp_path, siesmart, telemetry.plugin, "good")
    if broken == "raising-hooks":
        plugin: OtelPlugin = _Exploding(telemetry.tracer_provider, telemetry.meter_provider)
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_FailingExporter()))  # type: ignore[arg-type]
        plugin = OtelPlugin(provider, telemetry.meter_provider)
    assert _run_once(tmp_path, siesmart, plugin, "bad") == expected
    assert expected[0] == DocState.DELIVERED


def test_the_entry_point_registers_the_plugin_instance() -> None:
    """The entry point names the module's ``default`` instance: pluggy registers its hook
    methods directly (no module function forwarding each call). The module's functions
    still work for code that registers the module itself."""
    import docrelay_otel
    from docrelay._host import PluginHost

    (ep,) = [e for e in entry_points(group="docrelay.plugins") if e.name == "otel"]
    assert ep.value == "docrelay_otel:default"
    host = PluginHost(environ={})
    assert host.pm.get_plugin("otel") is docrelay_otel.default
    assert [i.plugin for i in host.pm.hook.on_exchange.get_hookimpls()] == [docrelay_otel.default]

    as_module = PluginHost(autoload=False, plugins=[docrelay_otel], environ={})
    impls = as_module.pm.hook.on_exchange.get_hookimpls()
    assert [i.function for i in impls] == [docrelay_otel.on_exchange]


def test_without_tracing_the_traceparent_names_the_document_trace(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    """No tracer provider configured (a no-op one): no span is made or kept, the metrics
    are counted, and a provider with ``trace_context = true`` still gets the traceparent a
    no-op tracer gives: the document revision's derived trace and root."""
    plugin = OtelPlugin(trace.NoOpTracerProvider(), telemetry.meter_provider)
    with siesmart_relay(tmp_path, siesmart, plugin, trace_context=True) as relay:
        relay.submit(proposal("n-1"))
        relay.run_until_settled(timeout=10)
        attempts = telemetry.points("docrelay.delivery.attempts")
    assert attempts[(("outcome", "delivered"), ("provider", "siesmart"))].value == 1
    assert plugin._open == {}
    trace_id, root = document_trace_id("siesmart", "n-1", proposal("n-1").revision)
    sent = [{k.lower(): v for k, v in r["headers"].items()} for r in siesmart.requests]
    assert [h.get("traceparent") for h in sent if "authorization" in h] == [
        f"00-{trace_id:032x}-{root:016x}-01"
    ]


def test_spans_sampled_out_cost_no_attribute_work(
    tmp_path: Path, siesmart: SieSmartSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracer provider whose sampler records nothing: the URL path is not redacted nor
    the request id looked for (here they would raise, and the host would disable the
    plugin), the metrics are all counted."""
    import docrelay_otel

    def boom(*_args: Any) -> Any:
        raise AssertionError("work for a span that does not record")

    monkeypatch.setattr(docrelay_otel, "_path", boom)
    monkeypatch.setattr(docrelay_otel, "_request_id", boom)
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        plugin = OtelPlugin(tracer_provider, meter_provider)
        with siesmart_relay(tmp_path, siesmart, plugin) as relay:
            relay.submit_many([proposal("s-1"), proposal("s-2")])
            relay.run_until_settled(timeout=10)
            assert relay.status("s-2").state == DocState.DELIVERED
        data = reader.get_metrics_data()
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
    values = {
        (m.name, tuple(sorted(p.attributes.items()))): getattr(p, "value", None)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    p = ("provider", "siesmart")
    assert values[("docrelay.delivery.attempts", (("outcome", "delivered"), p))] == 2
    assert values[("docrelay.deliveries", (p, ("state", "delivered")))] == 2


def test_two_plugin_instances_on_one_meter_provider_count_together(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    """The counters of one meter provider are one set, whichever instance counts."""
    first = OtelPlugin(telemetry.tracer_provider, telemetry.meter_provider)
    second = OtelPlugin(telemetry.tracer_provider, telemetry.meter_provider)
    for i, plugin in enumerate([first, second]):
        (tmp_path / str(i)).mkdir()
        with siesmart_relay(tmp_path / str(i), siesmart, plugin) as relay:
            relay.submit(proposal(f"two-{i}"))
            relay.run_until_settled(timeout=10)
    attempts = telemetry.points("docrelay.delivery.attempts")
    assert attempts[(("outcome", "delivered"), ("provider", "siesmart"))].value == 2
    duration = telemetry.points("docrelay.exchange.duration")
    assert duration[(("provider", "siesmart"), ("purpose", "send"))].count == 2


def test_a_no_op_meter_provider_still_gets_spans(
    tmp_path: Path, siesmart: SieSmartSandbox, telemetry: Telemetry
) -> None:
    plugin = OtelPlugin(telemetry.tracer_provider, metrics.NoOpMeterProvider())
    with siesmart_relay(tmp_path, siesmart, plugin) as relay:
        relay.submit(proposal("m-1"))
        relay.run_until_settled(timeout=10)
    by_purpose = {s.attributes["docrelay.purpose"]: s for s in telemetry.finished("m-1")}
    assert sorted(by_purpose) == ["send", "token"]
    assert by_purpose["send"].attributes["docrelay.outcome"] == "delivered"
    assert by_purpose["send"].attributes["url.path"] == "/proposals"


def test_spans_start_once_the_application_configures_tracing() -> None:
    """No span work while the global tracer provider is the API's proxy; the application
    may configure it later (once per process: checked in a child process)."""
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from docrelay_otel import OtelPlugin, default
given = OtelPlugin(tracer_provider=trace.get_tracer_provider())
assert default._recording_tracer() is None and given._recording_tracer() is None
trace.set_tracer_provider(TracerProvider())
assert default._recording_tracer() is not None and given._recording_tracer() is not None
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.stdout.strip() == "ok", out.stderr
