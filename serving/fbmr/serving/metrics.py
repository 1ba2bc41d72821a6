"""Prometheus metrics of the facade, and the middleware that records them (and refuses bodies
over the size limit before they are read)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from fbmr.serving.errors import error_response

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)


def install_middleware(app: FastAPI, metrics: Metrics, max_body_bytes: int) -> None:
    @app.middleware("http")
    async def limits_and_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body_bytes:
            message = f"request body of {length} bytes is over the limit of {max_body_bytes}"
            response: Response = error_response(413, message)
        else:
            response = await call_next(request)
        # the route's path template, so that label values stay few whatever URLs are asked for
        route = request.scope.get("route")
        endpoint = route.path if route else "unmatched"
        metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response
