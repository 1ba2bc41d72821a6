"""Load shedding: a bound on the requests one facade process has under way to Triton. Past it a
request is refused at once with a 503 and Retry-After, before its photo is decoded, instead of
queueing behind work the machine cannot finish in time; the requests it accepts keep a bounded
latency however many clients come.

Why here and not with Triton's own bounded queue (`max_queue_size`): in Triton releases before
the fix of triton-inference-server/core#466 (early 2026), an ensemble whose step is refused by
its model's full queue is mishandled (the request hangs; the 2.51 server of the cpu target
crashed under it), and every request here runs through an ensemble.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Overloaded(RuntimeError):
    """Every slot is taken: the caller answers 503 and the client retries later."""


class Admission:
    """At most `limit` requests under way at once (0: no bound). Used from one event loop, so a
    plain counter is exact."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.limit and self.in_flight >= self.limit:
            raise Overloaded(f"{self.in_flight} requests under way, the limit")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
