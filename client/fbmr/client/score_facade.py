"""The facade backend of `fbmr score`: batches of rows through the facade's HTTP API, with
`concurrency` requests in flight on one pooled `AsyncClient`."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from tqdm import tqdm

from fbmr.client.batch import score_facade_batch
from fbmr.client.client import AsyncClient
from fbmr.client.retry import DEFAULT_POLICY, RetryPolicy
from fbmr.client.score_chunks import ChunkStore, Unit
from fbmr.client.score_window import score_units
from fbmr.core.contract import DEFAULT_FACADE_URL


@dataclass(frozen=True)
class FacadeTarget:
    """Score through the facade's HTTP API."""

    url: str = DEFAULT_FACADE_URL
    api_key: str | None = None
    retry: RetryPolicy = DEFAULT_POLICY


async def score_facade(
    run: ChunkStore,
    units: list[Unit],
    target: FacadeTarget,
    batch_size: int,
    concurrency: int,
    bar: tqdm,
) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with AsyncClient(
        target.url, target.api_key, retry=target.retry, max_connections=concurrency
    ) as client:
        await score_units(
            units,
            lambda batch: score_facade_batch(client, batch, run.options, limit),
            batch_size,
            max(2, math.ceil(concurrency / batch_size) + 1),
            run.finish_unit,
            bar,
        )
