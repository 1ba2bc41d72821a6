"""Resumable batch scoring of a whole catalogue (`fbmr score`).

The input's rows are numbered and cut into chunks (`fbmr.client.batch.chunks`). Batches of rows are
scored concurrently through the facade (`batch.facade`), straight to Triton (`batch.triton`) or on a
Ray cluster (`batch.ray`, started by `batch.ray_session`), and each chunk is written once all its
rows are scored. A run stopped in any way (Ctrl-C, `kill -9`, Triton down past the retries) leaves
only whole chunks behind; the same command scores the chunks that are missing, then writes OUTPUT
(atomically) from the chunks in row order and removes the folder. So a resumed run gives the same
rows as an uninterrupted one, each input row exactly once.

`retry_errors` scores again the rows recorded with an error, in the chunks of a run in progress
or in a finished OUTPUT (which is cut back into chunks first).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fbmr.client.batch.chunks import (
    ChunkStore,
    ScoreError,
    Work,
    read_output,
    work_dir,
    write_output,
)
from fbmr.client.batch.facade import FacadeTarget, score_facade
from fbmr.client.batch.ray import score_ray
from fbmr.client.batch.rows import ScoreOptions, reason
from fbmr.client.batch.triton import TritonTarget, default_workers, score_triton

__all__ = [
    "FacadeTarget",
    "ScoreError",
    "ScoreOptions",
    "Summary",
    "TritonTarget",
    "default_workers",
    "read_output",
    "score",
    "work_dir",
    "write_output",
]


@dataclass
class Summary:
    """What a run did: rows in the output, rows scored by this invocation, errors by reason."""

    output: str
    rows: int
    scored: int
    errors: dict[str, int]
    scoring_s: float
    wall_s: float
    resumed_rows: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.scored / self.scoring_s if self.scoring_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "rows": self.rows,
            "scored": self.scored,
            "resumed_rows": self.resumed_rows,
            "errors": self.errors,
            "scoring_s": round(self.scoring_s, 3),
            "rows_per_s": round(self.rows_per_s, 2),
            "wall_s": round(self.wall_s, 3),
        }

    def text(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        lines = [
            f"{self.output}: {self.rows} rows ({self.resumed_rows} from an earlier run)",
            f"errors: {sum(self.errors.values())} ({errors})",
            f"sent {self.scored} rows in {self.scoring_s:.1f} s ({self.rows_per_s:.1f} rows/s; "
            f"those that failed are among the errors above); wall time {self.wall_s:.1f} s",
        ]
        return "\n".join(lines)


def score(
    source: str | Path,
    out: Path,
    target: FacadeTarget | TritonTarget,
    options: ScoreOptions | None = None,
    batch_size: int = 32,
    concurrency: int | None = None,
    chunk_rows: int = 1024,
    retry_errors: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Score every row of `source` into `out`, resuming a run stopped earlier (see the module
    docstring). `concurrency`: requests in flight (facade, default 8), batches in flight
    (Triton, default 2) or Ray actors (default 2)."""
    started = time.perf_counter()
    options = options or ScoreOptions()
    if batch_size < 1 or chunk_rows < 1:
        raise ScoreError("--batch-size and --chunk-rows must be positive")
    run = ChunkStore(str(source), Path(out), options, chunk_rows, overwrite)
    if run.out.exists() and not run.folder.exists():
        if not retry_errors:
            frame = read_output(run.out)
            errors = Counter(reason(e) for e in frame["error"].dropna())
            return Summary(str(run.out), len(frame), 0, dict(errors), 0.0, 0.0, len(frame))
        run.from_output()
    run.start()
    units = run.units(retry_errors)
    todo = sum(len(u.rows) for u in units)
    bar = tqdm(
        total=len(run.rows),
        initial=len(run.rows) - todo,
        desc="score",
        unit="row",
        disable=not progress,
        dynamic_ncols=True,
    )
    scoring_started = time.perf_counter()
    try:
        if not units:
            pass
        elif isinstance(target, FacadeTarget):
            asyncio.run(score_facade(Work(run, units, batch_size, concurrency or 8, bar), target))
        elif target.ray_address is not None:
            score_ray(Work(run, units, batch_size, concurrency or 2, bar), target, progress)
        else:
            asyncio.run(score_triton(Work(run, units, batch_size, concurrency or 2, bar), target))
    finally:
        bar.close()
    scoring_s = time.perf_counter() - scoring_started
    table = run.assemble()
    write_output(table, run.out)
    shutil.rmtree(run.folder)
    errors = Counter(reason(e) for e in table.column("error").drop_null().to_pylist())
    return Summary(
        output=str(run.out),
        rows=table.num_rows,
        scored=todo,
        errors=dict(errors),
        scoring_s=scoring_s,
        wall_s=time.perf_counter() - started,
        resumed_rows=len(run.rows) - todo,
    )
