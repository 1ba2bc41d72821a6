"""Similar-listing search: indexes of catalogue embeddings, saved in versions and swapped in
atomically; each version opened on its engine (FAISS, `fbmr.serving.index.faiss_index`, or
Milvus, `fbmr.serving.index.milvus_index`).

One index per kind of query (photo, text, photo + text), so that a query is compared with the
catalogue in the same embedding space. Embeddings are L2-normalised and compared by inner
product (cosine similarity). Layout on disk:

    INDEX_DIR/
      CURRENT            name of the version in use, replaced atomically
      v0001/             image.faiss, text.faiss, combined.faiss, listings.json, meta.json
      updates.jsonl      the live updates since (`updates`), then updates.1.jsonl, ... once
                         compacted (`compaction`)
      photos/            the photos of the listings put, for the next build
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.fileio import atomic_write_text
from fbmr.serving.index.build import on_gpu, resolve_type
from fbmr.serving.index.faiss_index import FaissIndex, build_faiss
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import (
    FAISS,
    INDEX_FORMAT,
    MILVUS,
    LiveIndex,
    read_meta,
)

log = logging.getLogger(__name__)

CURRENT = "CURRENT"


def version_folders(index_dir: Path) -> list[Path]:
    """The index's version folders (`v0001`, ...), oldest first."""
    found = [p for p in index_dir.glob("v[0-9]*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]))


def current_version(index_dir: Path) -> str | None:
    """The name of the version CURRENT points at; None before the first build."""
    pointer = index_dir / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else None


def save_version(
    index_dir: Path,
    vectors: dict[Kind, NDArray[np.float32]],
    listings: list[dict[str, Any]],
    meta: dict[str, Any],
    kind: IndexType = IndexType.auto,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> Path:
    """Write a new index version (aside, then renamed) and make it CURRENT: FAISS files in the
    version's folder, or, given `milvus_uri`, collections in that Milvus (a cluster's URI, or a
    local milvus-lite file, relative to `index_dir`)."""
    if not listings:
        raise ValueError("an index needs at least one listing")
    for name, array in vectors.items():
        if len(array) != len(listings):
            raise ValueError(f"{name}: {len(array)} vectors for {len(listings)} listings")
    concrete = resolve_type(kind, len(listings))
    if milvus_uri is None:
        indexes = {name: build_faiss(array, kind) for name, array in vectors.items()}
        return save_faiss_version(index_dir, indexes, listings, meta, concrete)
    # pymilvus: the `milvus` extra
    from fbmr.serving.index.milvus_index import connect, write_collections

    version, staging = _staging(index_dir)
    with contextlib.closing(connect(index_dir, milvus_uri, milvus_token)) as client:
        collections = write_collections(client, version, vectors, listings, kind)
    engine = {"backend": MILVUS, "milvus_uri": milvus_uri, "collections": collections}
    return _publish(index_dir, staging, _meta(version, engine, concrete, listings, vectors, meta))


def save_faiss_version(
    index_dir: Path,
    indexes: dict[Kind, faiss.Index],
    listings: list[dict[str, Any]],
    meta: dict[str, Any],
    kind: IndexType,
) -> Path:
    """A new FAISS version of built `indexes` (of concrete type `kind`), FAISS id i being
    `listings[i]`, made CURRENT."""
    version, staging = _staging(index_dir)
    for name, index in indexes.items():
        cpu = faiss.index_gpu_to_cpu(index) if on_gpu(index) else index
        faiss.write_index(cpu, str(staging / f"{name.value}.faiss"))
    (staging / "listings.json").write_text(json.dumps(listings))
    engine = {"backend": FAISS}
    return _publish(index_dir, staging, _meta(version, engine, kind, listings, indexes, meta))


def _meta(
    version: str,
    engine: dict[str, Any],
    kind: IndexType,
    listings: list[dict[str, Any]],
    kinds: Iterable[Kind],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """A version's meta.json: what it is and holds, then what its writer adds."""
    return {
        "format": INDEX_FORMAT,
        "version": version,
        **engine,
        "type": kind.value,
        "count": len(listings),
        "kinds": [k.value for k in kinds],
        **meta,
    }


def save_meta_version(index_dir: Path, meta: dict[str, Any]) -> Path:
    """A new version of what `meta` (another version's, changed) says: for a version on the same
    Milvus collections as the one it follows, which hold every update already."""
    version, staging = _staging(index_dir)
    return _publish(index_dir, staging, {**meta, "version": version})


def _staging(index_dir: Path) -> tuple[str, Path]:
    """The next version's name and an empty folder to write it in (what a writer stopped part
    way left there is cleared: one writer at a time holds `writer_lock`)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in version_folders(index_dir)]
    version = f"v{max(numbers, default=0) + 1:04d}"
    staging = index_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return version, staging


def _publish(index_dir: Path, staging: Path, meta: dict[str, Any]) -> Path:
    """The version in `staging` with its meta.json, renamed into place and made CURRENT."""
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    path = staging.rename(index_dir / meta["version"])
    atomic_write_text(index_dir / CURRENT, meta["version"] + "\n")
    return path


@contextlib.contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """One writer of new versions at a time in an index directory (`fbmr index build`,
    `fbmr index compact`): an exclusive lock on a file there, which the kernel releases
    however its holder ends. A second writer waits."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".writer.lock", "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def open_version(
    path: Path, milvus_token: str | None = None, milvus_uri: str | None = None
) -> LiveIndex:
    """The index version in folder `path`, on the engine its meta.json names.

    `milvus_token` is sent only to the Milvus at `milvus_uri` (the one the token is for): a
    version whose meta.json names another Milvus opens without it, so whoever can write an
    index directory cannot have the token sent to a server of theirs."""
    meta = read_meta(path)
    if meta.get("backend", FAISS) == MILVUS:
        from fbmr.serving.index.milvus_index import MilvusIndex  # pymilvus: the `milvus` extra

        if meta.get("milvus_uri") != milvus_uri:
            milvus_token = None
        milvus: LiveIndex = MilvusIndex(path, milvus_token)
        return milvus
    return FaissIndex(path)


class IndexStore:
    """The index in use, swapped for a new version without disturbing searches in flight.

    A search takes a reference to the current index version and uses it to the end; a reload
    loads the new version completely before replacing that reference in one assignment.
    """

    def __init__(
        self,
        index_dir: Path | None,
        milvus_token: str | None = None,
        milvus_uri: str | None = None,
    ) -> None:
        self.index_dir = index_dir
        # for versions that live in the Milvus cluster at `milvus_uri` (and only for those)
        self.milvus_token, self.milvus_uri = milvus_token, milvus_uri
        self.current: LiveIndex | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[str, float] | None = None

    def _pointer(self) -> tuple[str, float] | None:
        path = self.index_dir / CURRENT if self.index_dir else None
        if path is None or not path.is_file():
            return None
        return path.read_text().strip(), path.stat().st_mtime

    def reload(self, force: bool = False) -> bool:
        """Load the CURRENT version if it changed (or `force`); True when a new one is in use."""
        with self._lock:
            stamp = self._pointer()
            if stamp is None or (stamp == self._stamp and not force):
                return False
            assert self.index_dir is not None  # a pointer was read from it
            path = self.index_dir / stamp[0]
            loaded = open_version(path, self.milvus_token, self.milvus_uri)
            self.current, self._stamp = loaded, stamp
            log.info(
                "similar-listing index %s loaded (%d listings)",
                loaded.version,
                len(loaded),
            )
            return True

    def catch_up(self) -> int:
        """Apply the live updates written since the last call (by any worker) to the index in
        use; returns how many records were read."""
        current = self.current
        return current.catch_up() if current is not None else 0
