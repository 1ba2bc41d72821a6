"""When and how to retry: only what is safe, with back-off and jitter, within a time budget.

Every facade endpoint is idempotent (a prediction, an embedding, a search, a reload), so a
request can be sent again after a 503, a reset or a timeout. A refused connection (nothing
listens there: a wrong address, or a facade restarting) is tried again for `refused_s` only, so a
typo fails in about two seconds rather than after the whole budget. A 4xx is never retried:
the same request gets the same answer. The back-off is stamina's (exponential, jittered, capped);
a 503's `Retry-After` replaces it for that wait. `RetryPolicy.timeout_s` bounds the total time.

Each retry is logged as one INFO line of `fbmr.client.retry` naming what failed. stamina also
records each as a WARNING of its own logger (`stamina.retry_scheduled`). The client's
retry module gives that logger a `NullHandler`, so a program that has not set up logging does not
get them on its terminal through Python's last-resort handler; a program that has set up logging
still gets them (they propagate as before), and the `fbmr` command keeps them below the terminal.

`retry_call` applies the same policy to any call and exception type, so code outside the HTTP
client (the direct scorer's Triton calls, which raise their own `Unavailable`) retries the same
way.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import stamina

from fbmr.client.errors import ServerUnreachable, Unavailable

if TYPE_CHECKING:
    from stamina._core import _RetryContextIterator

T = TypeVar("T")

log = logging.getLogger(__name__)
# no last-resort output of stamina's retry records where logging is not set up (module docstring)
logging.getLogger("stamina").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: at most `attempts` tries within `timeout_s` seconds in all; waits grow
    from `wait_initial_s` by `wait_exp_base` up to `wait_max_s`, plus up to `wait_jitter_s`."""

    attempts: int | None = 8
    timeout_s: float | None = 60.0
    wait_initial_s: float = 0.2
    wait_max_s: float = 5.0
    wait_jitter_s: float = 0.5
    wait_exp_base: float = 2.0
    # a server's Retry-After beyond this is cut to it (the total time still bounds everything)
    retry_after_max_s: float = 30.0
    # a refused connection is tried again only this long after the first try
    refused_s: float = 2.0

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(attempts=1)

    def hook(
        self, retryable: type[BaseException] | tuple[type[BaseException], ...]
    ) -> Callable[[Exception], bool | float]:
        """A stamina backoff hook for one call: retry `retryable` errors; a refused connection
        for `refused_s` only; honour an `Unavailable`'s Retry-After (with jitter, so clients told
        the same delay do not return together)."""
        started = time.monotonic()
        refused_tries = 0

        def decide(error: Exception) -> bool | float:
            nonlocal refused_tries
            if not isinstance(error, retryable):
                return False
            if getattr(error, "refused", False):
                # the back-off, cut to what is left of `refused_s`: the last wait would
                # otherwise run past it (a typo then failed after 3 s, not 2)
                left = self.refused_s - (time.monotonic() - started)
                if left <= 0.05:
                    return False
                refused_tries += 1
                grown = self.wait_initial_s * self.wait_exp_base ** (refused_tries - 1)
                wait = min(grown, self.wait_max_s) + random.uniform(0, self.wait_jitter_s)
                log.info("%s; trying again in %.1f s", error, min(wait, left))
                return min(wait, left)
            retry_after = getattr(error, "retry_after", None)
            if isinstance(retry_after, int | float) and retry_after > 0:
                jitter = random.uniform(0, self.wait_jitter_s)
                wait = float(min(retry_after, self.retry_after_max_s)) + jitter
                log.info("%s; trying again in %.1f s", error, wait)
                return wait
            log.info("%s; trying again", error)
            return True

        return decide

    def context(
        self, retryable: type[BaseException] | tuple[type[BaseException], ...]
    ) -> _RetryContextIterator:
        """stamina's retry context (sync and async iteration) for this policy."""
        return stamina.retry_context(
            on=self.hook(retryable),
            attempts=self.attempts,
            timeout=self.timeout_s,
            wait_initial=self.wait_initial_s,
            wait_max=self.wait_max_s,
            wait_jitter=self.wait_jitter_s,
            wait_exp_base=self.wait_exp_base,
        )


DEFAULT_POLICY = RetryPolicy()
# What the client retries: a 503 and no answer at all.
TRANSIENT: tuple[type[Exception], ...] = (Unavailable, ServerUnreachable)


def retry_call(
    call: Callable[[], T],
    retryable: type[BaseException] | tuple[type[BaseException], ...] = TRANSIENT,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> T:
    """`call()`, tried again on `retryable` errors under `policy`; the last error is raised."""
    for attempt in policy.context(retryable):
        with attempt:
            return call()
    raise AssertionError("unreachable: stamina raises once attempts are spent")
