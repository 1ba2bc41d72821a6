"""Scoring a run's units in asyncio, a window of batches in flight at a time (the facade and
direct-to-Triton backends of `fbmr score`); each unit is handed back once all its rows are in."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pandas as pd

from fbmr.client.batch.chunks import Unit, Work
from fbmr.client.batch.rows import reason


def _batches(units: list[Unit], batch_size: int) -> Iterator[tuple[Unit, pd.DataFrame]]:
    for unit in units:
        starts = range(0, len(unit.rows), batch_size)
        unit.pending = len(starts)
        for start in starts:
            yield unit, unit.rows.iloc[start : start + batch_size]


async def score_units(
    work: Work,
    score_batch: Callable[[pd.DataFrame], Awaitable[pd.DataFrame]],
    window: int,
) -> None:
    """Score every unit's batches, `window` at a time, writing each unit's chunk when it is
    whole."""
    batches = _batches(work.units, work.batch_size)
    bar = work.bar
    running: dict[asyncio.Task[pd.DataFrame], Unit] = {}
    errors: Counter[str] = Counter()
    try:
        while True:
            while len(running) < window:
                item = next(batches, None)
                if item is None:
                    break
                unit, batch = item
                running[asyncio.ensure_future(score_batch(batch))] = unit
            if not running:
                return
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                unit = running.pop(task)
                result = task.result()
                unit.results.append(result)
                unit.pending -= 1
                errors.update(reason(e) for e in result["error"].dropna())
                bar.update(len(result))
                if errors:
                    bar.set_postfix(errors=sum(errors.values()), refresh=False)
                if unit.pending == 0:
                    work.store.finish_unit(unit)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
