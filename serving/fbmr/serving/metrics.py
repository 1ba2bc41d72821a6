"""Prometheus metrics of the facade: requests and latencies per route, the model version in use
and the versions the rollout refused. Apart from the HTTP middleware that records requests
(`fbmr.serving.http.middleware`) because the facade's state sets the version gauges too, and it
holds no web framework.

With several uvicorn workers (`fbmr serve --workers N`) every worker counts into files under
`PROMETHEUS_MULTIPROC_DIR` (set by `fbmr serve`), and `/metrics` from any worker adds them all
up (prometheus-client's multiprocess mode); with one process the app's own registry is read.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fbmr_requests", "Requests by endpoint and status code.", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fbmr_request_seconds", "Request latency by endpoint.", ["endpoint"],
            registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        # the highest across live workers: during a switch some workers may still be on the old
        self.model_version = Gauge(
            "fbmr_model_version", "The exported model version in use.",
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.refused_versions = Gauge(
            "fbmr_model_version_refused", "1 for each exported model version the rollout "
            "refused (it failed to load or to answer); 0 once its files change.", ["version"],
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: every worker's, summed, in multiprocess mode."""
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
