"""The facade backend of `fbmr score`: batches of rows through the facade's HTTP API, with
`concurrency` requests in flight on one pooled `AsyncClient` (`score_facade_batch`: each row of
a batch sent as its own requests, a row the facade refuses given the answer's code)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fbmr.client.batch.chunks import Work
from fbmr.client.batch.rows import (
    Row,
    ScoreOptions,
    output_frame,
    plan_row,
    read_photo,
)
from fbmr.client.batch.window import score_units
from fbmr.client.client import AsyncClient
from fbmr.client.errors import ClientError, NotFound, TooLarge, Unauthorised
from fbmr.client.retry import DEFAULT_POLICY, RetryPolicy
from fbmr.client.types import Embedding, Prediction
from fbmr.core.contract import DEFAULT_FACADE_URL, ErrorCode


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


def answer_error(err: ClientError) -> str:
    """The row's error for a facade 4xx about its content (422, 413, 400): the answer's code
    (never its wording), or the status's when the answer has none."""
    code = err.code or (
        ErrorCode.too_large if isinstance(err, TooLarge) else ErrorCode.invalid_input
    )
    return f"{code.value}: {err.message}"


async def _score_facade_row(
    client: AsyncClient, row: Row, options: ScoreOptions, limit: asyncio.Semaphore
) -> Row:
    if row.error is not None:
        return row
    photo: tuple[bytes, ...] | None = None  # a tuple: the client takes it as the photos' type
    if row.photos:
        try:
            photo = tuple([await asyncio.to_thread(read_photo, where) for where in row.photos])
        except ValueError as err:
            row.error = str(err)
            return row

    async def limited(call: Awaitable[Any]) -> Any:
        async with limit:
            return await call

    calls: list[Awaitable[Any]] = [limited(client.predict(photo, row.text))]
    if options.embeddings:
        calls.append(limited(client.embed(photo, row.text)))
    if options.similar:
        calls.append(limited(client.similar(photo, row.text, options.similar)))
    try:
        answers = await asyncio.gather(*calls)
    except (Unauthorised, NotFound):
        raise  # the run's configuration is wrong, not the row
    except ClientError as err:
        row.error = answer_error(err)
        return row
    prediction: Prediction = answers[0]
    row.ranked = list(zip(prediction.classes, prediction.probabilities, strict=True))
    rest = answers[1:]
    if options.embeddings:
        embedding: Embedding = rest.pop(0)
        row.embedding = embedding.vector
    if options.similar:
        row.similar = rest.pop(0)
    return row


async def score_facade_batch(
    client: AsyncClient,
    batch: pd.DataFrame,
    options: ScoreOptions,
    limit: asyncio.Semaphore,
) -> pd.DataFrame:
    """A batch scored through the facade, at most `limit` requests in flight at once."""
    rows = [
        plan_row(p, t, options.kind) for p, t in zip(batch["photo"], batch["text"], strict=True)
    ]
    scored = await asyncio.gather(*(_score_facade_row(client, r, options, limit) for r in rows))
    return output_frame(batch, list(scored), options)
