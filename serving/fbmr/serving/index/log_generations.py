"""Where the update log is: its generations, the seal that joins one to the next, and a place
in it (`Position`).

The log of an index directory is a chain of files, `updates.jsonl`, then `updates.1.jsonl`, ...
A compaction writes the next generation whole (its head: each listing's last record so far),
then appends a seal to the live one: `{"op":"seal","generation":N,"at":OFFSET}`, its last
record. A reader that reaches the seal goes on in generation N at OFFSET, past the head (what it
has read already, said again); a writer that finds the file sealed, under its lock, appends to
generation N instead. A file with no seal is the live one; a newer file off the chain (written
by a compaction stopped before its seal) is never read, and the next compaction replaces it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, Any, NamedTuple

UPDATES_LOG = "updates.jsonl"
_GENERATION = re.compile(r"updates(?:\.(\d+))?\.jsonl")
# a seal is short: the last bytes of a file hold all of it
_SEAL_OP = b'{"op":"seal"'
_TAIL = 256


class Position(NamedTuple):
    """A place in the log: a generation and a byte offset in its file."""

    generation: int
    offset: int

    def meta(self) -> dict[str, int]:
        """How an index version's meta.json records it."""
        return {"updates_generation": self.generation, "updates_folded": self.offset}

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Position:
        """The position an index version's meta.json records (the start, for one from before)."""
        return cls(int(meta.get("updates_generation", 0)), int(meta.get("updates_folded", 0)))


def log_path(index_dir: Path, generation: int) -> Path:
    return index_dir / (UPDATES_LOG if generation == 0 else f"updates.{generation}.jsonl")


def generations(index_dir: Path) -> list[int]:
    """The generations whose files are there, oldest first."""
    found = (_GENERATION.fullmatch(path.name) for path in index_dir.glob("updates*.jsonl"))
    return sorted(int(match[1] or 0) for match in found if match)


def seal_record(next_start: Position) -> bytes:
    """The last record of a sealed generation: go on in `next_start`."""
    record = {"op": "seal", "generation": next_start.generation, "at": next_start.offset}
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def seal_in(tail: bytes) -> Position | None:
    """Where a file ending in `tail` says to go on, if its last record is a seal."""
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if not last.startswith(_SEAL_OP):
        return None
    record = json.loads(last)
    return Position(int(record["generation"]), int(record["at"]))


def read_tail(file: IO[bytes]) -> bytes:
    """The last bytes of an open file (its position is left at the end)."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - _TAIL))
    return bytes(file.read())


def sealed(index_dir: Path, generation: int) -> Position | None:
    """Where the log goes on after `generation`, if that generation is sealed."""
    path = log_path(index_dir, generation)
    if not path.is_file():
        return None
    with open(path, "rb") as file:
        return seal_in(read_tail(file))


def live_generation(index_dir: Path) -> int:
    """The generation written to now: the end of the seals' chain from the oldest one there (a
    newer file off the chain is what a compaction stopped before its seal left)."""
    found = generations(index_dir)
    generation = found[0] if found else 0
    while (after := sealed(index_dir, generation)) is not None:
        generation = after.generation
    return generation


def write_durably(path: Path, data: bytes) -> None:
    """`data` as the file `path`, complete or not there at all, and on disk once this returns."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)
