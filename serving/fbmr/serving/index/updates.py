"""Listings added, changed and sold while serving: a durable, append-only log of updates.

A `PUT /v1/listings/{id}` or `DELETE` is acknowledged only once its record is on disk (written
under an exclusive lock, flushed and fsynced), so a facade killed right after it loses nothing.
Every facade worker tails the same log (`UpdateLog.read_new`) and applies what it has not seen
to its copy of the index, so all workers answer with the same catalogue within one poll.

One log per index directory, `INDEX_DIR/updates.jsonl`, beside the photos of the listings put
(`INDEX_DIR/photos/`, named by their SHA-256). A built index version records how far into the
log it has folded (`updates_folded`, a byte offset): its listings already hold those updates,
embedded again by the model of the new version, and a load replays only the records after it.
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
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.fileio import atomic_write_bytes
from fbmr.core.listing import cell_photos, photo_cell

log = logging.getLogger(__name__)

UPDATES_LOG = "updates.jsonl"
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
    """The append-only log of one index directory; each reader keeps its own position."""

    def __init__(self, index_dir: Path, start: int = 0) -> None:
        self.path = index_dir / UPDATES_LOG
        self.photos = index_dir / PHOTOS
        self.offset = start

    def append(self, update: Update) -> int:
        """Write `update` durably; returns the log's size after it (the offset past it)."""
        line = (update.to_json() + "\n").encode()
        with open(self.path, "ab") as file:
            # one writer at a time across worker processes, each record one write
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                if file.tell() and not _ends_a_line(self.path):
                    # a writer died mid-record: end that torn line, so this record stands alone
                    line = b"\n" + line
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
                return file.tell()
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def read_new(self, until: int | None = None) -> list[Update]:
        """The complete records written since this reader's last call, up to offset `until`
        (a record being written at that moment is read next time)."""
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read(-1 if until is None else max(0, until - self.offset))
        end = data.rfind(b"\n") + 1
        self.offset += end
        updates = []
        for line in data[:end].splitlines():
            try:
                updates.append(Update.from_json(line.decode()))
            except (ValueError, KeyError) as err:  # a record torn by a writer that died
                if line.strip():
                    log.error("%s: unreadable record skipped (%s): %.80r", self.path, err, line)
        return updates

    def end(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

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


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def changes(
    index_dir: Path, start: int = 0, upto: int | None = None
) -> tuple[dict[str, dict[str, Any] | None], int]:
    """The log's updates from offset `start` to `upto` (its end): by listing id, the last one's
    prepared-dataset row for a put, None for a delete. Returns them and the offset read to."""
    reader = UpdateLog(index_dir, start)
    rows: dict[str, dict[str, Any] | None] = {}
    for update in reader.read_new(reader.end() if upto is None else upto):
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
    return rows, reader.offset


def fold(
    catalogue: list[dict[str, Any]], index_dir: Path, start: int = 0, upto: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The catalogue (prepared-dataset rows) with the log's updates from `start` to `upto`
    applied: puts added or replacing the row of their id, deletes removed. Returns the rows and
    the offset folded, for the new version's `updates_folded`."""
    changed, offset = changes(index_dir, start, upto)
    rows = [row for row in catalogue if row["product_id"] not in changed]
    return rows + [row for row in changed.values() if row is not None], offset


# A photo is saved before its put is logged; one this recent may belong to a put on its way.
PHOTO_GRACE_S = 3600.0


def prune_photos(index_dir: Path, grace_s: float = PHOTO_GRACE_S) -> int:
    """Remove the photos under `photos/` that no listing in the log needs any more (its last
    update a delete, or a put with another photo): a rebuild embeds only the live listings'.
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
