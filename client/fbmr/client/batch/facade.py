"""The facade backend of `fbmr score`: batches of rows through the facade's HTTP API, with
`concurrency` requests in flight on one pooled `AsyncClient`."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from fbmr.client.batch.chunks import Work
from fbmr.client.batch.rows import score_facade_batch
from fbmr.client.batch.window import score_units
from fbmr.client.client import AsyncClient
from fbmr.client.retry import DEFAULT_POLICY, RetryPolicy
from fbmr.core.contract import DEFAULT_FACADE_URL


@dataclass(frozen=True)
class FacadeTarget:
    """Score through the facade's HTTP API."""

    url: str = DEFAULT_FACADE_URL
    api_key: str | None = None
    retry: RetryPolicy = DEFAULT_POLICY


async def score_facade(work: Work, target: FacadeTarget) -> None:
    """`work.concurrency` requests in flight, from enough batches to keep them busy."""
    limit = asyncio.Semaphore(work.concurrency)
    options = work.store.options
    async with AsyncClient(
        target.url, target.api_key, retry=target.retry, max_connections=work.concurrency
    ) as client:
        await score_units(
            work,
            lambda batch: score_facade_batch(client, batch, options, limit),
            max(2, math.ceil(work.concurrency / work.batch_size) + 1),
        )
