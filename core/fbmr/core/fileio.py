"""Atomic writes: a file appears complete under its name or not at all.

Everything that another process may read while it is being written (checkpoints, manifests,
prepared photos, an index's CURRENT pointer, batch-scoring chunks) is written to a temporary
file beside its target and renamed over it; a rename within one filesystem is atomic on POSIX, so
a reader, or a run resumed after `kill -9`, never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends
    without an error, removed when it raises."""
    path = Path(path)
    # The pid keeps two writers of the same target from sharing a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: object, indent: int | None = 2) -> None:
    """`data` as JSON (UTF-8, non-ASCII kept as is), ending in a newline."""
    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
