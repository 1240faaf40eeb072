"""docrelay-otel: OpenTelemetry traces and metrics for docrelay, on the public hooks only.

Installed, the plugin is found through the ``docrelay.plugins`` entry point (which names the
instance :data:`default`) and observes every relay of the process (it is a *middleware*
plugin: it declares no provider):

- a span per HTTP exchange with a provider (``on_exchange``): ``docrelay send PROVIDER``
  for a delivery attempt (started in ``prepare_headers``, so a ``traceparent`` can name it),
  ``docrelay poll|reconcile|refresh|token PROVIDER`` for the others;
- all spans of one document revision in one trace: the trace id is derived from provider,
  document id and revision (:func:`document_trace_id`), so attempts made by different
  workers, hours apart, line up without any state in the plugin;
- ``traceparent`` (W3C Trace Context) on deliveries to providers whose ``trace_context``
  setting is true (off by default: a provider may refuse unknown headers);
- metrics (:data:`METRIC_NAMES`) through the global meter provider when the application
  configured an SDK one, else through a private SDK meter provider with the Prometheus
  reader, so they appear on docrelay's ``/metrics`` page (``OTEL_METRICS_EXPORTER=none``
  turns that off).

An application that wants its own providers registers an instance instead
(``Relay(plugins=[OtelPlugin(tracer_provider=..., meter_provider=...)], disabled=["otel"])``).
No exception of this plugin reaches the engine's decisions: the host logs and disables a
middleware plugin that raises, and the engine logs an observer's exception.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from docrelay import (
    FINAL_STATES,
    Context,
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    Relay,
    TransportError,
    hookimpl,
)
from docrelay.helpers import redact
from opentelemetry import metrics, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "METRIC_NAMES",
    "REQUEST_ID_HEADERS",
    "OtelPlugin",
    "document_trace_id",
    "observe_store",
    "on_exchange",
    "on_state_change",
    "prepare_headers",
]

log = logging.getLogger("docrelay.otel")

SCOPE = "docrelay_otel"
#: Response headers that carry a provider's own id of the request, first found wins (a
#: provider's ``trace_header`` setting is looked at before these).
REQUEST_ID_HEADERS = (
    "X-B2B-TRACE-ID",
    "X-Request-Id",
    "Request-Id",
    "X-Correlation-Id",
    "X-Amzn-RequestId",
    "X-Trace-Id",
)
#: Metric name -> what it counts (the Prometheus names replace dots by underscores and add
#: the unit and ``_total`` for counters).
METRIC_NAMES: Mapping[str, str] = {
    "docrelay.exchanges": "HTTP exchanges with providers, by provider, purpose and outcome",
    "docrelay.exchange.duration": "seconds per HTTP exchange, by provider and purpose",
    "docrelay.delivery.attempts": "delivery attempts (sends), by provider and outcome",
    "docrelay.deliveries": "documents that reached a final state, by provider and state",
    "docrelay.rate_limit.wait": "seconds spent waiting for a provider's rate limit",
    "docrelay.retries": "sends and polls that will be tried again, by provider and outcome",
    "docrelay.reauths": "answers that asked for a new token, by provider",
    "docrelay.store.documents": "documents in the store by provider and state "
    "(observe_store(relay))",
}
#: Outcome kinds that mean "tried again later" (the retries metric).
_AGAIN = frozenset(
    {OutcomeKind.RETRY, OutcomeKind.THROTTLED, OutcomeKind.UNKNOWN, OutcomeKind.STALE}
)
_FAILED = frozenset({OutcomeKind.REJECTED, OutcomeKind.CONFIG_ERROR})
_FINAL_STATE_VALUES = frozenset(s.value for s in FINAL_STATES)
#: Histogram buckets in seconds (the SDK's default ones are meant for milliseconds).
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Spans of sends started in prepare_headers and not ended yet, at most this many.
_MAX_OPEN = 10_000


def document_trace_id(provider: str, doc_id: str, revision: str) -> tuple[int, int]:
    """The (trace id, parent span id) of one document revision's delivery: derived, so every
    worker puts that revision's spans in the same trace."""
    digest = hashlib.sha256(f"docrelay\0{provider}\0{doc_id}\0{revision}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def _parent(document: Document | None) -> OtelContext | None:
    if document is None:
        return None
    trace_id, span_id = document_trace_id(document.provider, document.id, document.revision)
    root = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(root))


def _request_id(response: HttpResponse | None, settings: Mapping[str, Any]) -> str | None:
    if response is None:
        return None
    headers = {k.lower(): v for k, v in response.headers.items()}
    named = settings.get("trace_header")
    for name in ([named] if isinstance(named, str) and named else []) + list(REQUEST_ID_HEADERS):
        value = headers.get(name.lower())
        if value:
            return redact(value)[:200]  # redacted before the cut: no half secret survives
    return None


_default_lock = threading.Lock()
_default_meter_provider: metrics.MeterProvider | None = None


def _fallback_meter_provider() -> metrics.MeterProvider:
    """The global meter provider when the application set an SDK one; else (once per
    process) a private SDK provider with the Prometheus reader, whose metrics appear on
    every ``prometheus_client`` page of the process (docrelay's ``/metrics``)."""
    global _default_meter_provider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

    current = metrics.get_meter_provider()
    if isinstance(current, SdkMeterProvider):
        return current
    with _default_lock:
        if _default_meter_provider is None:
            exporters = os.environ.get("OTEL_METRICS_EXPORTER", "prometheus")
            if "prometheus" in [e.strip() for e in exporters.split(",")]:
                from opentelemetry.exporter.prometheus import PrometheusMetricReader

                _default_meter_provider = SdkMeterProvider(
                    metric_readers=[PrometheusMetricReader()]
                )
            else:
                _default_meter_provider = metrics.NoOpMeterProvider()
        return _default_meter_provider


class _Metrics:
    """One meter provider's instruments, shared by every plugin instance that uses it.

    The counters are summed here, under a lock, and read by the SDK at each collection
    (observable counters: a Prometheus scrape or an exporter's interval reads one total per
    label set). Counting an exchange is then a dictionary update instead of an SDK
    measurement per counter (attributes copied, validated and hashed each time). The
    latency histogram has no observable form: it is recorded through the SDK, with one
    attribute mapping per provider and purpose.
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, dict[tuple[str, ...], float]] = {}
        for name, (unit, labels) in _COUNTERS.items():
            totals: dict[tuple[str, ...], float] = {}
            self._totals[name] = totals
            meter.create_observable_counter(
                name,
                callbacks=[self._observer(totals, labels)],
                unit=unit,
                description=METRIC_NAMES[name],
            )
        self._duration = meter.create_histogram(
            "docrelay.exchange.duration",
            unit="s",
            description=METRIC_NAMES["docrelay.exchange.duration"],
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._duration_attributes: dict[tuple[str, str], dict[str, str]] = {}
        self.exchanges = self._totals["docrelay.exchanges"]
        self.attempts = self._totals["docrelay.delivery.attempts"]
        self.deliveries = self._totals["docrelay.deliveries"]
        self.waits = self._totals["docrelay.rate_limit.wait"]
        self.retries = self._totals["docrelay.retries"]
        self.reauths = self._totals["docrelay.reauths"]

    def _observer(
        self, totals: dict[tuple[str, ...], float], labels: tuple[str, ...]
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def observe(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            with self._lock:
                items = list(totals.items())
            return [metrics.Observation(n, dict(zip(labels, key, strict=True))) for key, n in items]

        return observe

    def add(self, totals: dict[tuple[str, ...], float], key: tuple[str, ...], n: float = 1) -> None:
        with self._lock:
            totals[key] = totals.get(key, 0) + n

    def duration(self, seconds: float, provider: str, purpose: str) -> None:
        attributes = self._duration_attributes.get((provider, purpose))
        if attributes is None:
            attributes = {"provider": provider, "purpose": purpose}
            self._duration_attributes[(provider, purpose)] = attributes
        self._duration.record(seconds, attributes)


#: Counters (summed by the plugin, see :class:`_Metrics`): unit and label names.
_COUNTERS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "docrelay.exchanges": ("1", ("provider", "purpose", "outcome")),
    "docrelay.delivery.attempts": ("1", ("provider", "outcome")),
    "docrelay.deliveries": ("1", ("provider", "state")),
    "docrelay.rate_limit.wait": ("s", ("provider",)),
    "docrelay.retries": ("1", ("provider", "outcome")),
    "docrelay.reauths": ("1", ("provider",)),
}
_metrics_lock = threading.Lock()
_metrics_by_provider: weakref.WeakKeyDictionary[metrics.MeterProvider, _Metrics] = (
    weakref.WeakKeyDictionary()
)


def _metrics_of(provider: metrics.MeterProvider, meter: metrics.Meter) -> _Metrics | None:
    """The instruments on *provider* (made once per provider), ``None`` for a no-op one."""
    if isinstance(provider, metrics.NoOpMeterProvider):
        return None  # nobody can read them: no work per exchange
    with _metrics_lock:
        try:
            found = _metrics_by_provider.get(provider)
        except TypeError:  # not weak-referenceable: instruments of this plugin instance
            return _Metrics(meter)
        if found is None:
            found = _metrics_by_provider[provider] = _Metrics(meter)
        return found


_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class OtelPlugin:
    """The plugin: register an instance, or let the entry point register :data:`default`.

    Per exchange it does only what someone can read: no span work while no tracer provider
    is configured (nor attribute work for a span that does not record, the URL path is
    redacted only for a recording one), no metric work on a no-op meter provider, and the
    counters are sums kept in the plugin that the SDK reads at collection (:class:`_Metrics`).

    :param tracer_provider: where spans go (default: the global one, a no-op until the
        application configures OpenTelemetry).
    :param meter_provider: where metrics go (default: see :func:`_fallback_meter_provider`).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._lock = threading.Lock()
        self._open: dict[int, tuple[trace.Span, int, Document | None]] = {}
        self._meter: metrics.Meter | None = None
        self._metrics: _Metrics | None = None
        self._metrics_made = False
        self._recording: tuple[trace.TracerProvider, trace.Tracer] | None = None
        self._attributes: dict[tuple[str, str | None, str, str], dict[str, Any]] = {}

    # -- OpenTelemetry objects, made on first use ----------------------------------------------

    @property
    def tracer(self) -> trace.Tracer:
        return trace.get_tracer(SCOPE, tracer_provider=self._tracer_provider)

    @property
    def meter(self) -> metrics.Meter:
        if self._meter is None:
            provider = self._meter_provider or _fallback_meter_provider()
            self._meter = provider.get_meter(SCOPE)
        return self._meter

    def _instruments(self) -> _Metrics | None:
        if not self._metrics_made:
            with self._lock:
                if not self._metrics_made:
                    provider = self._meter_provider or _fallback_meter_provider()
                    self._metrics = _metrics_of(provider, self.meter)
                    self._metrics_made = True
        return self._metrics

    def _recording_tracer(self) -> trace.Tracer | None:
        """The tracer, or ``None`` while spans cannot record (no tracer provider given and
        none configured globally): then no span work is done per exchange at all."""
        provider = self._tracer_provider
        if provider is None or isinstance(provider, trace.ProxyTracerProvider):
            provider = trace.get_tracer_provider()  # the proxy follows the global one once set
        if isinstance(provider, _NO_TRACING):
            return None
        known = self._recording
        if known is None or known[0] is not provider:
            known = self._recording = (provider, trace.get_tracer(SCOPE, tracer_provider=provider))
        return known[1]

    def _span_attributes(
        self, ctx: Context, document: Document | None, purpose: str, attempt: int, method: str
    ) -> dict[str, Any]:
        """The span's attributes at its start: those of the provider, environment, purpose
        and method made once, the document's and the attempt's added."""
        key = (ctx.provider.name, ctx.environment, purpose, method)
        base = self._attributes.get(key)
        if base is None:
            base = {"docrelay.provider": ctx.provider.name, "docrelay.purpose": purpose}
            if ctx.environment:
                base["docrelay.environment"] = ctx.environment
            base["http.request.method"] = method
            if len(self._attributes) < _MAX_OPEN:
                self._attributes[key] = base
        attributes = {**base, "docrelay.attempt": attempt}
        if document is not None:
            attributes["docrelay.document.id"] = document.id
            attributes["docrelay.document.kind"] = document.kind
            attributes["docrelay.document.revision"] = document.revision
        return attributes

    def observe_store(self, relay: Relay) -> None:
        """Report *relay*'s documents by provider and state as the observable gauge
        ``docrelay.store.documents`` (read from the store at each collection)."""

        def callback(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            depth = relay.queue_depth()
            return [
                metrics.Observation(n, {"provider": provider, "state": state})
                for provider, states in depth.items()
                for state, n in states.items()
            ]

        self.meter.create_observable_gauge(
            "docrelay.store.documents",
            callbacks=[callback],
            unit="1",
            description=METRIC_NAMES["docrelay.store.documents"],
        )

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str] | None:
        """Start the span of this delivery attempt; name it in ``traceparent`` when the
        provider's ``trace_context`` setting allows it."""
        document = ctx.document
        tracer = self._recording_tracer()
        if tracer is None:
            if ctx.settings.get("trace_context") is not True:
                return None
            # No tracing: the no-op tracer's span is the document's derived root, named so.
            span = self.tracer.start_span(
                f"docrelay send {ctx.provider.name}", context=_parent(document)
            )
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
            return carrier
        span = tracer.start_span(
            f"docrelay send {ctx.provider.name}",
            context=_parent(document),
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(ctx, document, "send", ctx.attempt, request.method),
        )
        with self._lock:
            stale = self._open.pop(id(ctx), None)
            if len(self._open) >= _MAX_OPEN:
                self._open.pop(next(iter(self._open)))[0].end()
            self._open[id(ctx)] = (span, ctx.attempt, document)
        if stale is not None:
            stale[0].set_status(Status(StatusCode.ERROR, "the request did not go out"))
            stale[0].end()
        if ctx.settings.get("trace_context") is not True:
            return None
        carrier = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    @hookimpl
    def on_exchange(
        self,
        document: Document | None,
        request: HttpRequest,
        response: HttpResponse | None,
        error: TransportError | None,
        outcome: Outcome | None,
        elapsed: float,
        waited: float,
        attempt: int,
        purpose: str,
        ctx: Context,
    ) -> None:
        provider = ctx.provider.name
        kind = outcome.kind.value if outcome is not None else "none"
        tracer = self._recording_tracer()
        if tracer is not None:
            self._span(tracer, document, request, response, error, outcome, elapsed, waited,
                       attempt, purpose, ctx, kind)  # fmt: skip

        m = self._instruments()
        if m is None:
            return
        m.add(m.exchanges, (provider, purpose, kind))
        m.duration(elapsed, provider, purpose)
        if waited > 0:
            m.add(m.waits, (provider,), waited)
        if purpose == "send":
            m.add(m.attempts, (provider, kind))
        if outcome is not None and purpose in ("send", "poll"):
            if outcome.kind in _AGAIN:
                m.add(m.retries, (provider, kind))
            if outcome.kind == OutcomeKind.REAUTH:
                m.add(m.reauths, (provider,))

    def _span(
        self,
        tracer: trace.Tracer,
        document: Document | None,
        request: HttpRequest,
        response: HttpResponse | None,
        error: TransportError | None,
        outcome: Outcome | None,
        elapsed: float,
        waited: float,
        attempt: int,
        purpose: str,
        ctx: Context,
        kind: str,
    ) -> None:
        """End the exchange's span (the send's started in prepare_headers, else a new one)."""
        end = time.time_ns()
        span: trace.Span | None = None
        if purpose == "send":
            with self._lock:
                opened = self._open.pop(id(ctx), None)
            if opened is not None and opened[1] == attempt and opened[2] is document:
                span = opened[0]
            elif opened is not None:
                opened[0].end()
        if span is None:
            parent = _parent(document)
            if purpose == "token":
                # A token fetched for a send is part of that attempt: a child of its span.
                with self._lock:
                    opened = self._open.get(id(ctx))
                if opened is not None:
                    parent = trace.set_span_in_context(opened[0])
            span = tracer.start_span(
                f"docrelay {purpose} {ctx.provider.name}",
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=end - int((elapsed + waited) * 1e9),
                attributes=self._span_attributes(ctx, document, purpose, attempt, request.method),
            )
        if not span.is_recording():  # sampled out: nothing to set (the path not redacted)
            span.end(end_time=end)
            return
        attributes: dict[str, Any] = {
            "docrelay.outcome": kind,
            "docrelay.rate_limit.wait_s": round(waited, 6),
            "url.path": _path(request.url),
        }
        if response is not None:
            attributes["http.response.status_code"] = response.status
        ref = _request_id(response, ctx.settings)
        if ref is not None:
            attributes["docrelay.provider.request_id"] = ref
        if outcome is not None and outcome.rule:
            attributes["docrelay.rule"] = outcome.rule
        if error is not None:
            attributes["error.type"] = error.kind
        span.set_attributes(attributes)  # one call: the SDK takes its lock once
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error.kind))
        elif (outcome is not None and outcome.kind in _FAILED) or (
            response is not None and response.status >= 400
        ):
            # As OpenTelemetry's HTTP conventions say for client spans: 4xx and 5xx too.
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end(end_time=end)

    @hookimpl
    def on_state_change(
        self, document: Document, old: str, new: str, outcome: Outcome | None
    ) -> None:
        if new in _FINAL_STATE_VALUES:
            m = self._instruments()
            if m is not None:
                m.add(m.deliveries, (document.provider, str(new)))


def _path(url: str) -> str:
    """The URL's path without query (a query may carry a credential), every known secret
    masked: some APIs put a key or a token in the path itself (``/v1/<key>/invoices``)."""
    from urllib.parse import urlsplit

    return redact(urlsplit(url).path) or "/"


#: The instance the entry point registers (``otel = "docrelay_otel:default"``: pluggy takes its
#: hook methods). The module's hook functions below forward to it, for code that registers
#: the module itself.
default = OtelPlugin()


@hookimpl
def prepare_headers(request: HttpRequest, ctx: Context) -> dict[str, str] | None:
    return default.prepare_headers(request, ctx)


@hookimpl
def on_exchange(
    document: Document | None,
    request: HttpRequest,
    response: HttpResponse | None,
    error: TransportError | None,
    outcome: Outcome | None,
    elapsed: float,
    waited: float,
    attempt: int,
    purpose: str,
    ctx: Context,
) -> None:
    default.on_exchange(
        document, request, response, error, outcome, elapsed, waited, attempt, purpose, ctx
    )


@hookimpl
def on_state_change(document: Document, old: str, new: str, outcome: Outcome | None) -> None:
    default.on_state_change(document, old, new, outcome)


def observe_store(relay: Relay) -> None:
    """Report *relay*'s documents by provider and state through the installed plugin's meter
    (``docrelay.store.documents``)."""
    default.observe_store(relay)
