"""The HTTP middleware around every route: it refuses bodies over the size limit (by their
Content-Length before they are read, and by the bytes that arrive when there is none or it lies:
BodyGuard; a body that stops arriving is answered 408, not waited for), records each request in
the Prometheus metrics (`fbmr.serving.metrics`) and writes the access log, one JSON line a
request carrying its id and the model and index versions that answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fbmr.core.contract import ErrorCode
from fbmr.serving import request_context
from fbmr.serving.http.errors import error_response
from fbmr.serving.metrics import Metrics

access_log = logging.getLogger("fbmr.access")

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
