"""The resumable chunk store of `fbmr score`: input rows numbered and cut into chunks, each chunk
written once whole as one atomic Parquet file in `OUTPUT.partial/` beside a state file naming the
input's fingerprint and the options, then OUTPUT assembled from the chunks in row order.

A run stopped in any way leaves only whole chunks behind, so the same command resumes it and
gives each input row exactly once (`fbmr.client.batch.run` drives a run; the backends fill units).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from fbmr.client.batch.inputs import fingerprint, read_input
from fbmr.client.batch.rows import ScoreOptions, output_schema
from fbmr.core.fileio import atomic_path, atomic_write_json

STATE_FORMAT = "fbmr.score/1"
STATE_FILE = "state.json"
ROW = "_row"  # the input position of a row, carried through scoring and the chunks
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


class ScoreError(RuntimeError):
    """The run cannot start or go on as asked (another run's state, a changed input...)."""


@dataclass
class Unit:
    """Rows of one chunk still to score; `kept` holds the chunk's rows already scored."""

    chunk: int
    rows: pd.DataFrame
    kept: pd.DataFrame | None = None
    results: list[pd.DataFrame] = field(default_factory=list)
    pending: int = 0


@dataclass
class Work:
    """What a backend is given: the units of a run to score into its chunk store, in batches of
    `batch_size` rows, `concurrency` at a time (what that means is the backend's), progress on
    `bar`."""

    store: ChunkStore
    units: list[Unit]
    batch_size: int
    concurrency: int
    bar: tqdm


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
    # the list columns are those the output schema (every option on) types as lists, as
    # `write_output` wrote them
    every = output_schema(ScoreOptions(embeddings=True, similar=1))
    for name in frame.columns:
        if name in every.names and pa.types.is_list(every.field(name).type):
            frame[name] = [None if pd.isna(v) else json.loads(v) for v in frame[name]]
    return frame


class ChunkStore:
    """One invocation's state and chunks, and the units of work still to do."""

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
        self.schema = output_schema(options, [pa.field(ROW, pa.int64())])
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

    def units(self, retry_errors: bool) -> list[Unit]:
        """The chunks to score, and with `retry_errors` the failed rows of finished ones."""
        units = []
        for chunk in range(self.chunks):
            rows = self.chunk_rows_of(chunk)
            if not self.done(chunk):
                units.append(Unit(chunk, rows))
            elif retry_errors:
                kept = pd.read_parquet(_chunk_path(self.folder, chunk))
                failed = kept[kept["error"].notna()]
                if len(failed):
                    units.append(
                        Unit(
                            chunk,
                            rows[rows[ROW].isin(failed[ROW])],
                            kept[kept["error"].isna()],
                        )
                    )
        return units

    def finish_unit(self, unit: Unit) -> None:
        """Write the unit's chunk, checked to hold exactly the chunk's input rows."""
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
