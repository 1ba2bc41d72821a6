"""`fbmr index compact`: the update log cut down to what it says in the end and folded into a
new index version, with nothing embedded again; safe to kill at any point.

Why: the log grows by a record (about 3 kB with its vectors) per put and never shrinks; every
load replays what its version has not folded, every build reads it whole, and a photo stays as
long as a record names it. A full rebuild (`fbmr index build`) folds it too, but embeds the
whole catalogue again. A compaction:

1. writes the log's next generation whole (aside, fsynced, then renamed), its head: each
   listing's last record (a put, or a delete, which must still hide a catalogue listing from
   the next build);
2. seals the live generation with a record that points past that head. Steps 1 and 2 hold the
   writers' lock, so no update is acknowledged in between; from then on writers append to the
   new generation and readers follow the seal (`log_generations`);
3. loads the CURRENT version, replays the log on it, through the seal, and saves the result as
   a new version at the position it read to: FAISS files of the live vectors (the records carry
   their vectors), or on Milvus a meta.json over the same collections, which the workers keep
   up to date with the log;
4. tidies up (`retention.tidy_up`): versions past `keep`, the generations no kept version reads
   any more, and the photos no live listing needs.

Killed after step 1, the new file is off the chain, never read, and replaced by the next
compaction; after step 2, the CURRENT version replays through the seal; after step 3, the old
generations and photos wait for the next tidy-up. One compaction or build at a time
(`store.writer_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbmr.serving.index.faiss_index import FaissIndex
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import LiveIndex
from fbmr.serving.index.log_generations import (
    Position,
    live_generation,
    log_path,
    seal_record,
    write_durably,
)
from fbmr.serving.index.retention import KEEP_VERSIONS, tidy_up
from fbmr.serving.index.store import (
    current_version,
    open_version,
    save_faiss_version,
    save_meta_version,
    save_version,
    writer_lock,
)

log = logging.getLogger(__name__)

# what a compacted version keeps of its predecessor's meta.json (the rest describes its files)
CARRIED = ("catalogue", "splits", "model_version", "skipped")


@dataclass(frozen=True)
class Compacted:
    """What a compaction did: the live generation's records and bytes before, the new
    generation's head after, the seconds writers were held (steps 1-2) and the version it saved
    (None without an index to fold into)."""

    records_before: int
    records_after: int
    bytes_before: int
    bytes_after: int
    writers_held_s: float
    version: str | None


def compact(
    index_dir: Path,
    keep: int = KEEP_VERSIONS,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> Compacted:
    """Compact the update log of `index_dir` and fold it into a new version (see the module);
    `milvus_token` goes only to the Milvus at `milvus_uri`, as in `fbmr index build`."""
    with writer_lock(index_dir):
        started = time.perf_counter()
        before, after = rotate(index_dir)
        held_s = time.perf_counter() - started
        current = current_version(index_dir)
        version = None
        if current is not None:
            version = fold_into_version(index_dir / current, milvus_uri, milvus_token)
        tidy_up(index_dir, keep, milvus_uri, milvus_token)
    return Compacted(len(before), len(after), _size(before), _size(after), held_s, version)


def rotate(index_dir: Path) -> tuple[list[bytes], list[bytes]]:
    """Steps 1 and 2: the next generation written with each listing's last record, then the
    live one sealed. Returns the live generation's records and the new head's."""
    generation = live_generation(index_dir)
    with open(log_path(index_dir, generation), "ab+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # the writers' lock: none appends meanwhile
        try:
            file.seek(0)
            data = file.read()
            records = data.splitlines(keepends=True)
            head = last_records(records)
            following = Position(generation + 1, _size(head))
            write_durably(log_path(index_dir, following.generation), b"".join(head))
            seal = seal_record(following)
            file.write(seal if not data or data.endswith(b"\n") else b"\n" + seal)
            file.flush()
            os.fsync(file.fileno())
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
    log.info(
        "update log generation %d compacted into %d: %d records, %d kept",
        generation, following.generation, len(records), len(head),
    )  # fmt: skip
    return records, head


def last_records(records: list[bytes]) -> list[bytes]:
    """Each listing's last record, in the order of those records (each line as written, ending
    in a newline); records that cannot be read (torn by a writer that died) are left out."""
    last: dict[str, bytes] = {}
    for line in records:
        try:
            record = json.loads(line)
            listing_id, op = record["id"], record["op"]
        except (ValueError, KeyError, TypeError):
            if line.strip():
                log.error("unreadable update log record left out: %.80r", line)
            continue
        if op in ("put", "delete"):
            last.pop(listing_id, None)
            last[listing_id] = line if line.endswith(b"\n") else line + b"\n"
    return list(last.values())


def fold_into_version(path: Path, milvus_uri: str | None, milvus_token: str | None) -> str | None:
    """Step 3: the version in `path` with the log replayed on it, saved as the next version;
    its name (None when no listing is left to save: the version in use stays)."""
    index = open_version(path, milvus_token, milvus_uri)  # its load replays the log
    try:
        return _save_next(index)
    except ValueError as err:  # no listing left: an index needs one
        log.warning("no version saved after the compaction: %s", err)
        return None
    finally:
        if close := getattr(index, "close", None):
            with contextlib.suppress(Exception):
                close()


def _save_next(index: LiveIndex) -> str:
    index_dir = index.path.parent
    meta: dict[str, Any] = {key: index.meta[key] for key in CARRIED if key in index.meta}
    meta |= {**index.updates.position.meta(), "compacted_from": index.version}
    if isinstance(index, FaissIndex):
        kind = IndexType(index.meta["type"])
        if index.columns.all_alive:  # nothing masked: its indexes as they are, no rebuild
            return save_faiss_version(index_dir, index.indexes, index.listings, meta, kind).name
        listings, vectors = index.live()  # rebuilt from the live vectors
        return save_version(index_dir, vectors, listings, meta, kind).name
    # Milvus: the collections hold the log as far as this load applied it (`LiveIndex.shared`)
    return save_meta_version(index_dir, {**index.meta, **meta, "count": len(index)}).name


def _size(records: list[bytes]) -> int:
    return sum(map(len, records))
