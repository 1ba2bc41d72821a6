"""The direct backend of `fbmr score`: batches straight to Triton's ensembles (`TritonScorer`),
photos preprocessed in a pool of spawned processes, `concurrency` batches in flight."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from fbmr.client.batch.chunks import Work
from fbmr.client.batch.rows import ScoreOptions
from fbmr.client.batch.scorer import TRITON_RETRY, TritonScorer
from fbmr.client.batch.window import score_units
from fbmr.client.retry import RetryPolicy
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import DEFAULT_MAX_PIXELS, DEFAULT_MODEL_REPOSITORY


@dataclass(frozen=True)
class TritonTarget:
    """Score straight against Triton's ensembles; photos preprocessed in `workers` processes.
    With `ray_address`, on a Ray cluster instead (`urls`: the Triton fleet)."""

    urls: tuple[str, ...]
    repository: Path = DEFAULT_MODEL_REPOSITORY
    workers: int = 2
    retry: RetryPolicy = TRITON_RETRY
    ray_address: str | None = None
    # photos over this many pixels are refused, as the facade refuses them
    max_pixels: int = DEFAULT_MAX_PIXELS

    def scorer_arguments(self, options: ScoreOptions) -> dict[str, Any]:
        """What a `TritonScorer` for this target takes (here, or in each Ray actor)."""
        return {
            "urls": list(self.urls),
            "artifacts": ModelArtifacts.load(self.repository),
            "options": options,
            "retry": self.retry,
            "max_pixels": self.max_pixels,
        }


def default_workers() -> int:
    """Photo-preprocessing processes for direct mode: the cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


async def score_triton(work: Work, target: TritonTarget) -> None:
    """`work.concurrency` batches in flight, each scored in a thread of its own."""
    loop = asyncio.get_running_loop()
    # spawn, not fork: the parent holds gRPC threads, which a forked child must not inherit
    processes = (
        ProcessPoolExecutor(target.workers, mp_context=get_context("spawn"))
        if target.workers > 0
        else None
    )
    threads = ThreadPoolExecutor(work.concurrency, thread_name_prefix="fbmr-score")
    scorer = TritonScorer(**target.scorer_arguments(work.store.options), executor=processes)
    try:
        await score_units(
            work, lambda batch: loop.run_in_executor(threads, scorer, batch), work.concurrency
        )
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
        if processes is not None:
            processes.shutdown(wait=False, cancel_futures=True)
        scorer.close()
