"""Resumable batch scoring of a whole catalogue (`fbmr score`).

The input's rows are numbered and cut into chunks of `chunk_rows`. Batches of rows are scored
concurrently (through the facade, straight to Triton, or on a Ray cluster: `fbmr.client.batch`)
and each chunk is written, once all its rows are scored, as one Parquet file made atomic
(temporary file, then rename) in `OUTPUT.partial/`, beside a small state file naming the input's
fingerprint and the options. A run stopped in any way (Ctrl-C, `kill -9`, Triton down past the
retries) leaves only whole chunks behind; the same command scores the chunks that are missing,
then writes OUTPUT (atomically) from the chunks in row order and removes the folder. So a
resumed run gives the same rows as an uninterrupted one, each input row exactly once.

`retry_errors` scores again the rows recorded with an error, in the chunks of a run in progress
or in a finished OUTPUT (which is cut back into chunks first).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from fbmr.client.batch import (
    TRITON_RETRY,
    ScoreOptions,
    TritonScorer,
    output_schema,
    reason,
    score_facade_batch,
)
from fbmr.client.client import AsyncClient
from fbmr.client.inputs import fingerprint, read_input
from fbmr.client.retry import DEFAULT_POLICY, RetryPolicy
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import DEFAULT_FACADE_URL, DEFAULT_MAX_PIXELS, DEFAULT_MODEL_REPOSITORY
from fbmr.core.fileio import atomic_path, atomic_write_json

STATE_FORMAT = "fbmr.score/1"
STATE_FILE = "state.json"
ROW = "_row"  # the input position of a row, carried through scoring and the chunks
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


class ScoreError(RuntimeError):
    """The run cannot start or go on as asked (another run's state, a changed input...)."""


@dataclass(frozen=True)
class FacadeTarget:
    """Score through the facade's HTTP API."""

    url: str = DEFAULT_FACADE_URL
    api_key: str | None = None
    retry: RetryPolicy = DEFAULT_POLICY


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
            f"scored {self.scored} rows in {self.scoring_s:.1f} s: {self.rows_per_s:.1f} rows/s; "
            f"wall time {self.wall_s:.1f} s",
        ]
        return "\n".join(lines)


@dataclass
class _Unit:
    """Rows of one chunk still to score; `kept` holds the chunk's rows already scored."""

    chunk: int
    rows: pd.DataFrame
    kept: pd.DataFrame | None = None
    results: list[pd.DataFrame] = field(default_factory=list)
    pending: int = 0


def work_dir(out: Path) -> Path:
    """Where a run keeps its chunks and state until OUTPUT is written."""
    return out.with_name(out.name + ".partial")


def _chunk_path(folder: Path, chunk: int) -> Path:
    return folder / f"chunk-{chunk:06d}.parquet"


def _write_chunk(path: Path, frame: pd.DataFrame, schema: pa.Schema) -> None:
    frame = frame.sort_values(ROW, kind="stable").reset_index(drop=True)
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _schema(options: ScoreOptions) -> pa.Schema:
    return output_schema(options, [pa.field(ROW, pa.int64())])


def _output_format(out: Path) -> str:
    fmt = OUTPUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ScoreError(f"{out}: unknown output format; use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def write_output(table: pa.Table, out: Path) -> None:
    """The results as Parquet, CSV (lists as JSON text) or JSON lines, made atomic."""
    fmt = _output_format(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
            return
        frame = table.to_pandas()
        if fmt == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
            return
        for name in frame.columns:
            if pa.types.is_list(table.schema.field(name).type):
                frame[name] = [
                    None if v is None else json.dumps(v.tolist() if hasattr(v, "tolist") else v)
                    for v in frame[name]
                ]
        frame.to_csv(tmp, index=False)


def read_output(out: Path) -> pd.DataFrame:
    """A finished OUTPUT as written by `write_output` (lists back from CSV's JSON text)."""
    fmt = _output_format(out)
    if fmt == "parquet":
        return pd.read_parquet(out)
    if fmt == "jsonl":
        return pd.read_json(out, lines=True, dtype=False)
    frame = pd.read_csv(out, dtype=str, keep_default_na=False, na_values=[""])
    for name in ("classes", "probabilities", "embedding", "similar_ids", "similar_scores"):
        if name in frame.columns:
            frame[name] = [None if pd.isna(v) else json.loads(v) for v in frame[name]]
    return frame


class _Run:
    """One invocation: state, chunks, and the units of work still to do."""

    def __init__(
        self,
        source: str,
        out: Path,
        options: ScoreOptions,
        chunk_rows: int,
        overwrite: bool,
    ) -> None:
        self.out = out
        self.folder = work_dir(out)
        self.options = options
        self.schema = _schema(options)
        _output_format(out)
        self.rows = read_input(source)
        self.rows[ROW] = range(len(self.rows))
        state = {
            "format": STATE_FORMAT,
            "input": source,
            "fingerprint": fingerprint(self.rows),
            "rows": len(self.rows),
            "chunk_rows": chunk_rows,
            "options": options.to_dict(),
        }
        if overwrite:
            shutil.rmtree(self.folder, ignore_errors=True)
            out.unlink(missing_ok=True)
        if (self.folder / STATE_FILE).is_file():
            old = json.loads((self.folder / STATE_FILE).read_text())
            for key in ("format", "fingerprint", "rows", "options"):
                if old.get(key) != state[key]:
                    raise ScoreError(
                        f"{self.folder} holds a run with another {key} "
                        f"({old.get(key)!r}, now {state[key]!r}); "
                        "--overwrite starts again from nothing"
                    )
            state["chunk_rows"] = old["chunk_rows"]  # the chunks on disk decide
        self.state = state
        self.chunk_rows = int(str(state["chunk_rows"]))
        self.chunks = max(1, math.ceil(len(self.rows) / self.chunk_rows))

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / STATE_FILE, self.state)

    def chunk_rows_of(self, chunk: int) -> pd.DataFrame:
        return self.rows.iloc[chunk * self.chunk_rows : (chunk + 1) * self.chunk_rows]

    def done(self, chunk: int) -> bool:
        return _chunk_path(self.folder, chunk).is_file()

    def units(self, retry_errors: bool) -> list[_Unit]:
        """The chunks to score, and with `retry_errors` the failed rows of finished ones."""
        units = []
        for chunk in range(self.chunks):
            rows = self.chunk_rows_of(chunk)
            if not self.done(chunk):
                units.append(_Unit(chunk, rows))
            elif retry_errors:
                kept = pd.read_parquet(_chunk_path(self.folder, chunk))
                failed = kept[kept["error"].notna()]
                if len(failed):
                    units.append(
                        _Unit(
                            chunk,
                            rows[rows[ROW].isin(failed[ROW])],
                            kept[kept["error"].isna()],
                        )
                    )
        return units

    def finish_unit(self, unit: _Unit) -> None:
        frame = pd.concat([*([unit.kept] if unit.kept is not None else []), *unit.results])
        expected = set(self.chunk_rows_of(unit.chunk)[ROW])
        if len(frame) != len(expected) or set(frame[ROW]) != expected:
            raise ScoreError(f"chunk {unit.chunk}: scored rows do not match its input rows")
        _write_chunk(_chunk_path(self.folder, unit.chunk), frame, self.schema)

    def from_output(self) -> None:
        """Cut a finished OUTPUT back into chunks (to score its failed rows again)."""
        frame = read_output(self.out)
        positions = dict(zip(self.rows["id"], self.rows[ROW], strict=True))
        if len(frame) != len(self.rows) or set(frame["id"].astype(str)) != set(positions):
            raise ScoreError(f"{self.out} does not hold the rows of this input; --overwrite")
        frame[ROW] = frame["id"].astype(str).map(positions)
        self.start()
        for chunk in range(self.chunks):
            first, last = chunk * self.chunk_rows, (chunk + 1) * self.chunk_rows
            part = frame[(frame[ROW] >= first) & (frame[ROW] < last)]
            _write_chunk(_chunk_path(self.folder, chunk), part, self.schema)

    def assemble(self) -> pa.Table:
        """Every chunk, in row order, checked to hold each input row exactly once."""
        tables = [pq.read_table(_chunk_path(self.folder, c)) for c in range(self.chunks)]
        table = pa.concat_tables(tables).cast(self.schema)
        positions = table.column(ROW).to_numpy()
        if len(positions) != len(self.rows) or (positions != range(len(self.rows))).any():
            raise ScoreError("the chunks do not hold each input row exactly once")
        return table.drop_columns([ROW])


def _batches(units: list[_Unit], batch_size: int) -> Iterator[tuple[_Unit, pd.DataFrame]]:
    for unit in units:
        starts = range(0, len(unit.rows), batch_size)
        unit.pending = len(starts)
        for start in starts:
            yield unit, unit.rows.iloc[start : start + batch_size]


async def _execute(
    units: list[_Unit],
    score_batch: Callable[[pd.DataFrame], Awaitable[pd.DataFrame]],
    batch_size: int,
    window: int,
    finish: Callable[[_Unit], None],
    bar: tqdm,
) -> None:
    """Score every unit's batches, `window` at a time, finishing each unit when it is whole."""
    batches = _batches(units, batch_size)
    running: dict[asyncio.Task[pd.DataFrame], _Unit] = {}
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
                    finish(unit)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _score_facade(
    run: _Run,
    units: list[_Unit],
    target: FacadeTarget,
    batch_size: int,
    concurrency: int,
    bar: tqdm,
) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with AsyncClient(
        target.url, target.api_key, retry=target.retry, max_connections=concurrency
    ) as client:
        await _execute(
            units,
            lambda batch: score_facade_batch(client, batch, run.options, limit),
            batch_size,
            max(2, math.ceil(concurrency / batch_size) + 1),
            run.finish_unit,
            bar,
        )


async def _score_triton(
    run: _Run,
    units: list[_Unit],
    target: TritonTarget,
    batch_size: int,
    concurrency: int,
    bar: tqdm,
) -> None:
    loop = asyncio.get_running_loop()
    # spawn, not fork: the parent holds gRPC threads, which a forked child must not inherit
    processes = (
        ProcessPoolExecutor(target.workers, mp_context=get_context("spawn"))
        if target.workers > 0
        else None
    )
    threads = ThreadPoolExecutor(concurrency, thread_name_prefix="fbmr-score")
    scorer = TritonScorer(**target.scorer_arguments(run.options), executor=processes)
    try:
        await _execute(
            units,
            lambda batch: loop.run_in_executor(threads, scorer, batch),
            batch_size,
            concurrency,
            run.finish_unit,
            bar,
        )
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
        if processes is not None:
            processes.shutdown(wait=False, cancel_futures=True)
        scorer.close()


def use_this_environment_for_local_ray() -> None:
    """Have a local Ray instance's workers run in this Python environment. Ray otherwise notices
    a driver started by `uv run` and gives each worker a runtime environment that runs `uv run`
    again in an uploaded copy of the working directory: a new environment built per worker, which
    outlasts Ray's worker start-up timeout, so the workers never start. Ray reads the switch
    when it is imported: call this first."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local one (None). A local start forks Ray's
    servers from this process and waits for them, 30 s by default; on a loaded 2-core machine a
    server has missed that wait (no GCS port written; no raylet registered), so the GCS wait is
    raised to 120 s unless set, and a local start that still fails is shut down and tried once
    more. Forking from a process that already holds gRPC client threads (Triton's) is not
    fork-safe: start Ray from a fresh process, as `fbmr score --ray local` does (so does the
    test), or join a head started apart (`ray start --head`)."""
    if address is None:
        use_this_environment_for_local_ray()
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    # "local": always a new instance; with no address Ray would join the last one `ray start`
    # recorded on this machine, even one long gone
    try:
        ray.init(address=address or "local", **kwargs)
    except Exception:  # Ray raises a bare Exception when the raylet misses its wait
        if address is not None:
            raise
        ray.shutdown()
        ray.init(address="local", **kwargs)


def _score_ray(
    run: _Run,
    units: list[_Unit],
    target: TritonTarget,
    batch_size: int,
    concurrency: int,
    bar: tqdm,
    progress: bool,
) -> None:
    """The same TritonScorer as Ray Data `map_batches` on an actor pool (one connection each);
    results stream back to this process, which writes the chunks."""
    address = None if target.ray_address in (None, "local") else target.ray_address
    if address is None:
        use_this_environment_for_local_ray()  # before Ray is imported: it reads it then
    import ray

    started = not ray.is_initialized()
    if started:
        start_ray(address)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        by_row = {}
        for unit in units:
            unit.pending = len(unit.rows)
            by_row.update(dict.fromkeys(unit.rows[ROW], unit))
        rows = pd.concat([unit.rows for unit in units])
        dataset = ray.data.from_pandas(rows).map_batches(
            TritonScorer,
            fn_constructor_kwargs=target.scorer_arguments(run.options),
            batch_size=batch_size,
            batch_format="pandas",
            concurrency=concurrency,
        )
        for raw in dataset.iter_batches(batch_format="pandas", batch_size=None):
            batch = cast(pd.DataFrame, raw)
            for position, part in batch.groupby(ROW, sort=False):
                unit = by_row[int(str(position))]
                unit.results.append(part)
                unit.pending -= len(part)
                if unit.pending == 0:
                    run.finish_unit(unit)
            bar.update(len(batch))
    finally:
        if started:
            ray.shutdown()


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
    run = _Run(str(source), Path(out), options, chunk_rows, overwrite)
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
            asyncio.run(_score_facade(run, units, target, batch_size, concurrency or 8, bar))
        elif target.ray_address is not None:
            _score_ray(run, units, target, batch_size, concurrency or 2, bar, progress)
        else:
            asyncio.run(_score_triton(run, units, target, batch_size, concurrency or 2, bar))
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


def default_workers() -> int:
    """Photo-preprocessing processes for direct mode: the cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))
