"""The Ray backend of `fbmr score`: the same `TritonScorer` as Ray Data `map_batches` on an actor
pool (one Triton connection each); results stream back to this process, which writes the chunks."""

from __future__ import annotations

from typing import cast

import pandas as pd

from fbmr.client.batch.chunks import ROW, Work
from fbmr.client.batch.ray_session import ray_session
from fbmr.client.batch.scorer import TritonScorer
from fbmr.client.batch.triton import TritonTarget


def score_ray(work: Work, target: TritonTarget, progress: bool) -> None:
    """Score the work on the Ray cluster at `target.ray_address`, `work.concurrency` actors;
    `progress`: Ray Data's own progress bars too."""
    units = work.units
    with ray_session(target.ray_address) as ray:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        by_row = {}
        for unit in units:
            unit.pending = len(unit.rows)
            by_row.update(dict.fromkeys(unit.rows[ROW], unit))
        rows = pd.concat([unit.rows for unit in units])
        dataset = ray.data.from_pandas(rows).map_batches(
            TritonScorer,
            fn_constructor_kwargs=target.scorer_arguments(work.store.options),
            batch_size=work.batch_size,
            batch_format="pandas",
            concurrency=work.concurrency,
        )
        for raw in dataset.iter_batches(batch_format="pandas", batch_size=None):
            batch = cast(pd.DataFrame, raw)
            for position, part in batch.groupby(ROW, sort=False):
                unit = by_row[int(str(position))]
                unit.results.append(part)
                unit.pending -= len(part)
                if unit.pending == 0:
                    work.store.finish_unit(unit)
            work.bar.update(len(batch))
