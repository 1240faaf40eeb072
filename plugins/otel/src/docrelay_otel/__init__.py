"""docrelay-otel: OpenTelemetry traces and metrics for docrelay, on the public hooks only.

Installed, the plugin is found through the ``docrelay.plugins`` entry point and observes every
relay of the process (it is a *middleware* plugin: it declares no provider):

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
from collections.abc import Iterable, Mapping
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


class OtelPlugin:
    """The plugin: register an instance, or let the entry point register the module's.

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
        self._instruments: dict[str, Any] | None = None
        self._meter: metrics.Meter | None = None

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

    def _metric(self, name: str) -> Any:
        with self._lock:
            if self._instruments is None:
                m = self.meter
                self._instruments = {
                    "docrelay.exchanges": m.create_counter(
                        "docrelay.exchanges",
                        unit="1",
                        description=METRIC_NAMES["docrelay.exchanges"],
                    ),
                    "docrelay.exchange.duration": m.create_histogram(
                        "docrelay.exchange.duration",
                        unit="s",
                        description=METRIC_NAMES["docrelay.exchange.duration"],
                        explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
                    ),
                    "docrelay.delivery.attempts": m.create_counter(
                        "docrelay.delivery.attempts",
                        unit="1",
                        description=METRIC_NAMES["docrelay.delivery.attempts"],
                    ),
                    "docrelay.deliveries": m.create_counter(
                        "docrelay.deliveries",
                        unit="1",
                        description=METRIC_NAMES["docrelay.deliveries"],
                    ),
                    "docrelay.rate_limit.wait": m.create_counter(
                        "docrelay.rate_limit.wait",
                        unit="s",
                        description=METRIC_NAMES["docrelay.rate_limit.wait"],
                    ),
                    "docrelay.retries": m.create_counter(
                        "docrelay.retries", unit="1", description=METRIC_NAMES["docrelay.retries"]
                    ),
                    "docrelay.reauths": m.create_counter(
                        "docrelay.reauths", unit="1", description=METRIC_NAMES["docrelay.reauths"]
                    ),
                }
            return self._instruments[name]

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
        span = self.tracer.start_span(
            f"docrelay send {ctx.provider.name}",
            context=_parent(document),
            kind=SpanKind.CLIENT,
            attributes=_base_attributes(ctx, document, "send", ctx.attempt)
            | {"http.request.method": request.method},
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
        carrier: dict[str, str] = {}
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
        end = time.time_ns()
        span: trace.Span | None = None
        if purpose == "send":
            with self._lock:
                opened = self._open.pop(id(ctx), None)
            if opened is not None and opened[1] == attempt and opened[2] is document:
                span = opened[0]
            elif opened is not None:
                opened[0].end()
        parent = _parent(document)
        if purpose == "token":
            # A token fetched for a send is part of that attempt: a child of its span.
            with self._lock:
                opened = self._open.get(id(ctx))
            if opened is not None:
                parent = trace.set_span_in_context(opened[0])
        if span is None:
            span = self.tracer.start_span(
                f"docrelay {purpose} {provider}",
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=end - int((elapsed + waited) * 1e9),
                attributes=_base_attributes(ctx, document, purpose, attempt)
                | {"http.request.method": request.method},
            )
        kind = outcome.kind.value if outcome is not None else "none"
        span.set_attribute("docrelay.outcome", kind)
        span.set_attribute("docrelay.rate_limit.wait_s", round(waited, 6))
        span.set_attribute("url.path", _path(request.url))
        if response is not None:
            span.set_attribute("http.response.status_code", response.status)
        ref = _request_id(response, ctx.settings)
        if ref is not None:
            span.set_attribute("docrelay.provider.request_id", ref)
        if outcome is not None and outcome.rule:
            span.set_attribute("docrelay.rule", outcome.rule)
        if error is not None:
            span.set_attribute("error.type", error.kind)
            span.set_status(Status(StatusCode.ERROR, error.kind))
        elif (outcome is not None and outcome.kind in _FAILED) or (
            response is not None and response.status >= 400
        ):
            # As OpenTelemetry's HTTP conventions say for client spans: 4xx and 5xx too.
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end(end_time=end)

        labels = {"provider": provider, "purpose": purpose, "outcome": kind}
        self._metric("docrelay.exchanges").add(1, labels)
        self._metric("docrelay.exchange.duration").record(
            elapsed, {"provider": provider, "purpose": purpose}
        )
        if waited > 0:
            self._metric("docrelay.rate_limit.wait").add(waited, {"provider": provider})
        if purpose == "send":
            self._metric("docrelay.delivery.attempts").add(
                1, {"provider": provider, "outcome": kind}
            )
        if outcome is not None and purpose in ("send", "poll"):
            if outcome.kind in _AGAIN or (outcome.kind == OutcomeKind.RETRY):
                self._metric("docrelay.retries").add(1, {"provider": provider, "outcome": kind})
            if outcome.kind == OutcomeKind.REAUTH:
                self._metric("docrelay.reauths").add(1, {"provider": provider})

    @hookimpl
    def on_state_change(
        self, document: Document, old: str, new: str, outcome: Outcome | None
    ) -> None:
        if new in {s.value for s in FINAL_STATES}:
            self._metric("docrelay.deliveries").add(
                1, {"provider": document.provider, "state": new}
            )


def _base_attributes(
    ctx: Context, document: Document | None, purpose: str, attempt: int
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "docrelay.provider": ctx.provider.name,
        "docrelay.purpose": purpose,
        "docrelay.attempt": attempt,
    }
    if ctx.environment:
        attributes["docrelay.environment"] = ctx.environment
    if document is not None:
        attributes["docrelay.document.id"] = document.id
        attributes["docrelay.document.kind"] = document.kind
        attributes["docrelay.document.revision"] = document.revision
    return attributes


def _path(url: str) -> str:
    """The URL's path without query (a query may carry a credential), every known secret
    masked: some APIs put a key or a token in the path itself (``/v1/<key>/invoices``)."""
    from urllib.parse import urlsplit

    return redact(urlsplit(url).path) or "/"


#: The instance the entry point registers (this module's hook functions delegate to it).
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
