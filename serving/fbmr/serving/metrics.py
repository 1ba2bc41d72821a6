"""Prometheus metrics of the facade (requests, latencies, the model version in use and the versions
the rollout refused), and the middleware that records them, writes the access log
and refuses bodies over the size limit: by their Content-Length before they are read, and by
the bytes that arrive when there is none or it lies (BodyGuard); a body that stops arriving is
answered 408, not waited for.

With several uvicorn workers (`fbmr serve --workers N`) every worker counts into files under
`PROMETHEUS_MULTIPROC_DIR` (set by `fbmr serve`), and `/metrics` from any worker adds them all
up (prometheus-client's multiprocess mode); with one process the app's own registry is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fbmr.core.contract import ErrorCode
from fbmr.serving import request_context
from fbmr.serving.errors import error_response

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

access_log = logging.getLogger("fbmr.access")


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


# The longest wait for the next piece of a request body: a client that says more is coming and
# sends nothing (a Content-Length larger than the body) gets a 408 instead of holding a request.
BODY_IDLE_TIMEOUT_S = 30.0
# The longest a whole body may take to arrive, however it trickles in: 10 MB in 60 s is 170 KB/s,
# slower than any phone upload that works at all, and a sender that keeps each piece just inside
# the idle timeout is cut off here.
BODY_TOTAL_TIMEOUT_S = 60.0


class BodyGuard:
    """ASGI middleware that counts a request body's bytes as the app reads them: more than
    `max_body_bytes` (chunked, or past a Content-Length that lies) is a 413, and a body that
    stalls for BODY_IDLE_TIMEOUT_S, or is still arriving BODY_TOTAL_TIMEOUT_S after the request
    began, a 408, both raised where the app reads it and answered as every HTTP error is (JSON
    `{"error": ...}`)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        idle_s, total_s = BODY_IDLE_TIMEOUT_S, BODY_TOTAL_TIMEOUT_S
        deadline = time.monotonic() + total_s

        async def guarded_receive() -> Message:
            nonlocal received
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(idle_s, left)))
            except TimeoutError:
                if left <= idle_s:
                    why = f"not complete {total_s:g} s after the request began"
                else:
                    why = f"nothing received for {idle_s:g} s"
                raise HTTPException(408, f"request body: {why}") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(
                        413, f"request body over the limit of {self.max_body_bytes} bytes"
                    )
            return message

        await self.app(scope, guarded_receive, send)


def install_middleware(app: FastAPI, metrics: Metrics, max_body_bytes: int) -> None:
    app.add_middleware(BodyGuard, max_body_bytes=max_body_bytes)  # inside the one below

    @app.middleware("http")
    async def limits_metrics_and_access_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        info = request_context.begin(
            request_context.request_id_from(request.headers.get(request_context.REQUEST_ID_HEADER))
        )
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body_bytes:
            message = f"request body of {length} bytes is over the limit of {max_body_bytes}"
            response: Response = error_response(413, message, code=ErrorCode.too_large)
        else:
            response = await call_next(request)
        seconds = time.perf_counter() - started
        # the route's path template, so that label values stay few whatever URLs are asked for
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.observe(endpoint, response.status_code, seconds)
        response.headers[request_context.REQUEST_ID_HEADER] = info.request_id
        access_log.info(
            json.dumps(
                {
                    "request_id": info.request_id,
                    "pid": os.getpid(),  # which worker answered
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 2),
                    "model_version": info.model_version,
                    "index_version": info.index_version,
                    "client": request.client.host if request.client else None,
                }
            )
        )
        return response
