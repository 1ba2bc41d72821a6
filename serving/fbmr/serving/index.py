"""Similar-listing search: FAISS indexes of catalogue embeddings, saved in versions and swapped
in atomically.

One index per kind of query (photo, text, photo + text), so that a query is compared with the
catalogue in the same embedding space. Embeddings are L2-normalised and compared by inner
product (cosine similarity). Layout on disk:

    INDEX_DIR/
      CURRENT            name of the version in use, replaced atomically
      v0001/             image.faiss, text.faiss, combined.faiss, listings.json, meta.json
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.fileio import atomic_write_text
from fbmr.serving.filters import ListingColumns, ListingFilter, search_parameters
from fbmr.serving.index_build import (
    build_index,
    factory_string,
    normalise,
    on_gpu,
    resolve_type,
    serving_search,
    to_gpu_if_available,
)
from fbmr.serving.index_types import IndexType
from fbmr.serving.updates import Update, UpdateLog

log = logging.getLogger(__name__)

INDEX_FORMAT = "fbmr.index/1"
CURRENT = "CURRENT"


def build_faiss(
    vectors: NDArray[np.float32], kind: IndexType = IndexType.auto, nlist: int = 0
) -> faiss.Index:
    """The served index of `kind` over L2-normalised `vectors` (its search settings saved in it)."""
    vectors = normalise(vectors)
    return serving_search(build_index(factory_string(kind, len(vectors), nlist), vectors))


def save_version(
    index_dir: Path,
    vectors: dict[Kind, NDArray[np.float32]],
    listings: list[dict[str, Any]],
    meta: dict[str, Any],
    kind: IndexType = IndexType.auto,
) -> Path:
    """Write a new index version (aside, then renamed) and make it CURRENT."""
    if not listings:
        raise ValueError("an index needs at least one listing")
    for name, array in vectors.items():
        if len(array) != len(listings):
            raise ValueError(f"{name}: {len(array)} vectors for {len(listings)} listings")
    index_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in index_dir.glob("v[0-9]*") if p.name[1:].isdigit()]
    version = f"v{max(numbers, default=0) + 1:04d}"
    staging = index_dir / f".{version}.partial"
    staging.mkdir()
    for name, array in vectors.items():
        faiss.write_index(build_faiss(array, kind), str(staging / f"{name}.faiss"))
    (staging / "listings.json").write_text(json.dumps(listings))
    meta = {
        "format": INDEX_FORMAT,
        "version": version,
        "type": resolve_type(kind, len(listings)).value,
        "count": len(listings),
        "kinds": [k.value for k in vectors],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **meta,
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    staging.rename(index_dir / version)
    atomic_write_text(index_dir / CURRENT, version + "\n")
    return index_dir / version


@dataclass(frozen=True)
class Hit:
    listing: dict[str, Any]
    score: float


class ReadWriteLock:
    """Many searches at once, or one update: FAISS searches may run concurrently, but not
    beside an `add` to the same index. A waiting update goes before new searches, so a steady
    stream of searches cannot hold updates back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writers = 0  # waiting or writing
        self._write = threading.Lock()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._writers == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers += 1
            self._cond.wait_for(lambda: self._readers == 0)
        # one writer at a time among themselves
        with self._write:
            try:
                yield
            finally:
                with self._cond:
                    self._writers -= 1
                    self._cond.notify_all()


class SimilarityIndex:
    """One loaded index version, with the live updates of its directory applied: search by a
    query embedding of a given kind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = json.loads((path / "meta.json").read_text())
        if self.meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: not an fbmr index (format {self.meta.get('format')!r})")
        self.listings: list[dict[str, Any]] = json.loads((path / "listings.json").read_text())
        self.indexes = {
            Kind(k): to_gpu_if_available(faiss.read_index(str(path / f"{k}.faiss")))
            for k in self.meta["kinds"]
        }
        self.columns = ListingColumns(self.listings)
        self.positions = {str(item["id"]): i for i, item in enumerate(self.listings)}
        self._lock = ReadWriteLock()
        # the updates made since this version was built, then those made while it serves
        self.updates = UpdateLog(path.parent, start=int(self.meta.get("updates_folded", 0)))
        self.catch_up()

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def model_version(self) -> int | None:
        """The model version whose embeddings the index holds (None for an index from before
        versions were recorded)."""
        version = self.meta.get("model_version")
        return None if version is None else int(version)

    def __contains__(self, listing_id: str) -> bool:
        return listing_id in self.positions

    def __len__(self) -> int:
        return len(self.positions)

    def catch_up(self) -> int:
        """Apply the log's records not seen yet; returns how many were applied."""
        with self._lock.writing():
            updates = self.updates.read_new()
            for update in updates:
                self._apply(update)
        return len(updates)

    def _apply(self, update: Update) -> None:
        old = self.positions.pop(update.id, None)
        if old is not None:
            self.columns.alive[old] = False
        if update.op == "delete":
            return
        assert update.listing is not None and update.vectors is not None
        if update.model_version != self.model_version or set(update.vectors) != set(self.indexes):
            log.warning(
                "update of listing %s skipped: embedded by model version %s for %s, and index "
                "%s holds model version %s for %s",
                update.id, update.model_version, sorted(update.vectors),
                self.version, self.model_version, sorted(self.indexes),
            )  # fmt: skip
            return
        for kind, index in self.indexes.items():
            index.add(normalise(update.vectors[kind][None]))
        self.listings.append(update.listing)
        self.positions[update.id] = self.columns.append(update.listing)

    def search(
        self,
        kind: Kind,
        embedding: NDArray[np.float32],
        k: int,
        where: ListingFilter | None = None,
    ) -> list[Hit]:
        """The `k` live listings nearest to `embedding` among those that pass `where`."""
        if kind not in self.indexes:
            raise KeyError(f"this index has no {kind.value} embeddings")
        where = where or ListingFilter()
        with self._lock.reading():
            # `total` counts listings deleted or replaced too: FAISS still holds their vectors
            index, query, total = self.indexes[kind], normalise(embedding[None]), self.columns.size
            if not where.active and self.columns.all_alive:
                scores, ids = index.search(query, min(k, total))
            else:
                allowed = self.columns.allowed(where)
                if len(allowed) == 0:
                    return []
                if on_gpu(index):
                    # GPU indexes take no ID selector: ask for enough candidates that k pass,
                    # then keep those
                    wanted = min(total, k * max(1, total // len(allowed)) * 2)
                    scores, ids = index.search(query, wanted)
                    passed = np.isin(ids[0], allowed)
                    scores, ids = scores[:, passed][:, :k], ids[:, passed][:, :k]
                else:
                    params = search_parameters(index, allowed, total, k)
                    scores, ids = index.search(query, min(k, len(allowed)), params=params)
            return [
                Hit(self.listings[i], float(s))
                for s, i in zip(scores[0], ids[0], strict=True)
                if i >= 0
            ]


class IndexStore:
    """The index in use, swapped for a new version without disturbing searches in flight.

    A search takes a reference to the current SimilarityIndex and uses it to the end; a reload
    loads the new version completely before replacing that reference in one assignment.
    """

    def __init__(self, index_dir: Path | None) -> None:
        self.index_dir = index_dir
        self.current: SimilarityIndex | None = None
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
            loaded = SimilarityIndex(self.index_dir / stamp[0])
            self.current, self._stamp = loaded, stamp
            log.info(
                "similar-listing index %s loaded (%d listings)",
                loaded.version,
                len(loaded),
            )
            return True

    def catch_up(self) -> int:
        """Apply the live updates written since the last call (by any worker) to the index in
        use; returns how many were applied."""
        current = self.current
        return current.catch_up() if current is not None else 0
