"""Listings added, changed and sold while serving: a durable, append-only log of updates.

A `PUT /v1/listings/{id}` or `DELETE` is acknowledged only once its record is on disk (written
under an exclusive lock, flushed and fsynced), so a facade killed right after it loses nothing.
Every facade worker tails the same log (`UpdateLog.read_new`) and applies what it has not seen
to its copy of the index, so all workers answer with the same catalogue within one poll.

One log per index directory, beside the photos of the listings put (`INDEX_DIR/photos/`, named
by their SHA-256), in generations: `updates.jsonl`, then `updates.1.jsonl`, ... Compaction
(`fbmr.serving.index.compaction`) starts the next generation with what the log says in the end
(each listing's last record), then seals the live one with a last record that says where to go
on: readers follow it to the new generation, past that head, and writers append there. So a
reader's place in the log is a `Position` (generation, byte offset), and a built index version
records the one it has folded up to (`updates_generation`, `updates_folded`): its listings
already hold those updates, and a load replays only the records after it.
Each record carries the model version that embedded it; a record of another version than the
index's is never mixed in (its vectors live in another embedding space).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.fileio import atomic_write_bytes
from fbmr.core.listing import cell_photos, photo_cell
from fbmr.serving.index.log_generations import (
    Position,
    generations,
    live_generation,
    log_path,
    read_tail,
    seal_in,
)

log = logging.getLogger(__name__)

PHOTOS = "photos"


@dataclass(frozen=True)
class Update:
    """One record of the log: a listing put (added or replaced) or deleted."""

    op: Literal["put", "delete"]
    id: str
    model_version: int | None = None
    listing: dict[str, Any] | None = None  # what a search returns: id, name, category, ...
    source: dict[str, Any] | None = None  # what a rebuild embeds again: name, description, photo
    vectors: dict[Kind, NDArray[np.float32]] | None = None

    def to_json(self) -> str:
        record: dict[str, Any] = {"op": self.op, "id": self.id}
        if self.op == "put":
            assert self.listing is not None and self.vectors is not None
            record |= {
                "model_version": self.model_version,
                "listing": self.listing,
                "source": self.source,
                "vectors": {
                    kind.value: base64.b64encode(np.asarray(v, np.float32).tobytes()).decode()
                    for kind, v in self.vectors.items()
                },
            }
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Update:
        record = json.loads(line)
        vectors = {
            Kind(kind): np.frombuffer(base64.b64decode(data), np.float32)
            for kind, data in (record.get("vectors") or {}).items()
        }
        return cls(
            op=record["op"],
            id=record["id"],
            model_version=record.get("model_version"),
            listing=record.get("listing"),
            source=record.get("source"),
            vectors=vectors or None,
        )


class UpdateLog:
    """The log of one index directory, as a reader (its own position) and a writer."""

    def __init__(self, index_dir: Path, start: Position = Position(0, 0)) -> None:
        self.index_dir = index_dir
        self.photos = index_dir / PHOTOS
        self.position = start
        self._writing = start.generation  # where appends go, unless sealed since

    @classmethod
    def resume(cls, index_dir: Path, start: Position) -> UpdateLog:
        """A reader from `start`; from the start of the live generation (whose head says what
        every earlier one did) when `start`'s generation is no longer there. Replaying a record
        an index already holds changes nothing: a put sets the listing, a delete removes it."""
        found = generations(index_dir)
        if found and start.generation < found[0]:  # removed once no kept version read it
            live = live_generation(index_dir)
            log.warning("update log generation %d is gone: replaying %d", start.generation, live)
            start = Position(live, 0)
        return cls(index_dir, start)

    @property
    def path(self) -> Path:
        """The file this reader reads now."""
        return log_path(self.index_dir, self.position.generation)

    def append(self, update: Update) -> Position:
        """Write `update` durably; returns the position past it."""
        line = (update.to_json() + "\n").encode()
        while True:
            with self._live_file() as file:
                # one writer at a time across worker processes, each record one write
                fcntl.flock(file, fcntl.LOCK_EX)
                try:
                    tail = read_tail(file)
                    if (after := seal_in(tail)) is not None:  # compacted: go on in the next
                        self._writing = after.generation
                        continue
                    if tail and not tail.endswith(b"\n"):
                        # a writer died mid-record: end that torn line, so this record stands alone
                        line = b"\n" + line
                    file.write(line)
                    file.flush()
                    os.fsync(file.fileno())
                    return Position(self._writing, file.tell())
                finally:
                    fcntl.flock(file, fcntl.LOCK_UN)

    def _live_file(self) -> IO[bytes]:
        """The file of the generation this writer appends to, opened to read and append. A
        generation removed since (its version long replaced) is never made again: the writer
        moves to the live one; only a log with no file yet gets its first."""
        while True:
            path = log_path(self.index_dir, self._writing)
            try:
                return os.fdopen(os.open(path, os.O_RDWR | os.O_APPEND), "a+b")
            except FileNotFoundError:
                live = live_generation(self.index_dir)
                if live == self._writing or not generations(self.index_dir):
                    return open(path, "a+b")  # the first record of a log
                self._writing = live

    def read_new(self) -> list[Update]:
        """The complete records written since this reader's last call, across seals (a record
        being written at that moment is read next time)."""
        updates: list[Update] = []
        while self.path.is_file():
            with open(self.path, "rb") as file:
                file.seek(self.position.offset)
                data = file.read()
            end = data.rfind(b"\n") + 1
            self.position = self.position._replace(offset=self.position.offset + end)
            lines = data[:end].splitlines()
            after = seal_in(lines[-1]) if lines else None
            updates += _records(self.path, lines[:-1] if after else lines)
            if after is None:
                break
            self.position = after
        return updates

    def has_new(self) -> bool:
        """Whether there is anything past this reader's position (cheap: one stat)."""
        try:
            return self.path.stat().st_size > self.position.offset
        except FileNotFoundError:
            return False

    def end(self) -> Position:
        """The position past the last complete record now (read to by a new reader)."""
        reader = UpdateLog(self.index_dir, self.position)
        reader.read_new()
        return reader.position

    def save_photo(self, data: bytes) -> str:
        """Keep a put listing's photo for the next rebuild; returns its name under photos/."""
        name = hashlib.sha256(data).hexdigest()
        path = self.photos / name
        if path.exists():
            os.utime(path)  # fresh again: `prune_photos` leaves a photo about to be logged alone
        else:
            self.photos.mkdir(exist_ok=True)
            atomic_write_bytes(path, data)
        return name


def _records(path: Path, lines: list[bytes]) -> list[Update]:
    updates = []
    for line in lines:
        try:
            updates.append(Update.from_json(line.decode()))
        except (ValueError, KeyError) as err:  # a record torn by a writer that died
            if line.strip():
                log.error("%s: unreadable record skipped (%s): %.80r", path, err, line)
    return updates


def changes(
    index_dir: Path, start: Position | None = None
) -> tuple[dict[str, dict[str, Any] | None], Position]:
    """The log's updates from `start` (by default the start of the live generation, whose head
    holds what every earlier one said: the whole history): by listing id, the last one's
    prepared-dataset row for a put, None for a delete. Returns them and the position read to."""
    reader = UpdateLog(index_dir, start or Position(live_generation(index_dir), 0))
    rows: dict[str, dict[str, Any] | None] = {}
    for update in reader.read_new():
        rows.pop(update.id, None)  # the last update of an id decides; keep log order
        if update.op == "delete":
            rows[update.id] = None
        else:
            assert update.listing is not None and update.source is not None
            # none for a listing put into a text-only index; a list for several photos
            photos = cell_photos(update.source["photo"])
            rows[update.id] = {
                "product_id": update.id,
                "product_name": update.source["name"],
                "product_description": update.source["description"],
                "label": update.listing["category"],
                "price": update.listing.get("price"),
                "location": update.listing.get("location"),
                "photo": photo_cell([str(reader.photos / name) for name in photos]),
            }
    return rows, reader.position


def fold(
    catalogue: list[dict[str, Any]], index_dir: Path, start: Position | None = None
) -> tuple[list[dict[str, Any]], Position]:
    """The catalogue (prepared-dataset rows) with the log's updates from `start` (see `changes`)
    applied: puts added or replacing the row of their id, deletes removed. Returns the rows and
    the position folded to, for the new version's meta."""
    changed, position = changes(index_dir, start)
    rows = [row for row in catalogue if row["product_id"] not in changed]
    return rows + [row for row in changed.values() if row is not None], position


# A photo is saved before its put is logged; one this recent may belong to a put on its way.
PHOTO_GRACE_S = 3600.0


def prune_photos(index_dir: Path, grace_s: float = PHOTO_GRACE_S) -> int:
    """Remove the photos under `photos/` that no listing in the log needs any more (its last
    update a delete, or a put with another photo): a rebuild embeds only the live listings',
    which the live generation holds.
    Photos newer than `grace_s` stay, since their put may not be logged yet. Returns how many
    were removed."""
    rows, _ = changes(index_dir)
    needed = {
        Path(where).name for row in rows.values() if row for where in cell_photos(row["photo"])
    }
    cutoff = time.time() - grace_s
    removed = 0
    for path in (index_dir / PHOTOS).glob("*"):
        if path.name not in needed and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
