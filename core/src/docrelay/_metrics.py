"""Prometheus metrics: the queue depth read from the store, plus the process's default registry.

``GET /metrics`` of the webhook app and ``docrelay run --metrics-port`` answer the same page:

- ``docrelay_queue_documents{provider,state}``: documents per provider and state, read from
  the store at every scrape (so every worker and the webhook receiver show the same numbers);
- ``docrelay_provider_paused{provider}``: 1 for a provider paused after a configuration error;
- ``docrelay_store_up``: 0 when the store could not be read for this scrape;
- everything registered in ``prometheus_client``'s default registry: the docrelay-otel
  plugin's metrics (through ``opentelemetry-exporter-prometheus``) when it is installed, and
  the client's process metrics.

The exposition format is ``prometheus_client``'s (a maintained library, not a hand-written
format).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._models import DocState

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


class Relay(Protocol):
    """What the metrics need of a :class:`docrelay.Relay` (no import of it: no cycle)."""

    def queue_depth(self) -> dict[str, dict[str, int]]: ...

    def paused(self) -> dict[str, tuple[str, float | None]]: ...


__all__ = ["CONTENT_TYPE", "QueueCollector", "metrics_page", "metrics_registry", "serve_metrics"]

log = logging.getLogger("docrelay.metrics")

#: The Content-Type of the text exposition format.
CONTENT_TYPE = CONTENT_TYPE_LATEST


class QueueCollector(Collector):
    """Reads the queue depth per provider and state from *relay*'s store at every scrape."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "docrelay_queue_documents",
            "Documents in the store, by provider and state.",
            labels=["provider", "state"],
        )
        paused = GaugeMetricFamily(
            "docrelay_provider_paused",
            "1 while a provider is paused after a configuration error.",
            labels=["provider"],
        )
        up = 1.0
        try:
            counts = self.relay.queue_depth()
            stopped = self.relay.paused()
        except Exception:
            log.exception("could not read the queue depth from the store")
            counts, stopped, up = {}, {}, 0.0
        # Every state of every provider that has documents, zeros included, so a state
        # that empties shows 0 instead of disappearing.
        for provider in sorted(counts):
            for state in DocState:
                depth.add_metric([provider, state.value], counts[provider].get(state.value, 0))
        for provider in sorted(stopped):
            paused.add_metric([provider], 1.0)
        yield depth
        yield paused
        yield GaugeMetricFamily(
            "docrelay_store_up", "1 when this scrape could read the store.", value=up
        )


class _DefaultRegistry(Collector):
    """Everything in prometheus_client's default registry (the otel plugin's metrics)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def metrics_registry(relay: Relay) -> CollectorRegistry:
    """A registry with *relay*'s queue depth and the default registry's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(relay))
    registry.register(_DefaultRegistry())
    return registry


def metrics_page(relay: Relay) -> bytes:
    """The ``/metrics`` page of *relay* in the Prometheus text format."""
    return generate_latest(metrics_registry(relay))


def serve_metrics(
    relay: Relay, host: str = "127.0.0.1", port: int = 0
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on *host*:*port* in a daemon thread; returns the server (its
    ``server_port`` is the port, useful with *port* 0) and the thread. ``server.shutdown()``
    stops it."""
    server, thread = start_http_server(port, addr=host, registry=metrics_registry(relay))
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server, thread
