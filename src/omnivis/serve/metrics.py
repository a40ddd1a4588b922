"""What a production user watches, in Prometheus' text format at `/metrics` (prometheus_client).

Each app has its own registry, so several servers (or tests) in one process never mix their counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

# Latency buckets (seconds) from a tiny model's few milliseconds to a large one's long answers.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class ServerMetrics:
    """The server's counters, histograms and gauges, in one registry."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    batch_size: Histogram
    batch_seconds: Histogram
    queue_depth: Gauge

    @classmethod
    def create(cls) -> ServerMetrics:
        """Fresh metrics in a registry of their own."""
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "omnivis_requests", "HTTP requests answered, by route and status code", ["route", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "omnivis_request_seconds", "Time from request to response, by route", ["route"],
                buckets=LATENCY_BUCKETS, registry=registry,
            ),
            batch_size=Histogram(
                "omnivis_batch_size", "Requests run together in one model call", buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            batch_seconds=Histogram(
                "omnivis_batch_seconds", "Time one model call took", buckets=LATENCY_BUCKETS, registry=registry
            ),
            queue_depth=Gauge("omnivis_queue_depth", "Requests waiting for a batch", registry=registry),
        )  # fmt: skip

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Reads the queue depth from `depth` at every scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
