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
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.fileio import atomic_write_text
from fbmr.serving.index.build import (
    factory_string,
    faiss_index_from_factory,
    normalise,
    on_gpu,
    resolve_type,
    serving_search,
    to_gpu_if_available,
)
from fbmr.serving.index.filters import (
    EXACT_BELOW,
    ListingColumns,
    ListingFilter,
    exact_among,
    search_parameters,
)
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import (
    FAISS,
    INDEX_FORMAT,
    MILVUS,
    Hit,
    LiveIndex,
    read_meta,
)
from fbmr.serving.index.updates import Update

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


GPU_MAX_K = 2048  # the most neighbours a faiss GPU search returns


def build_faiss(
    vectors: NDArray[np.float32], kind: IndexType = IndexType.auto, nlist: int = 0
) -> faiss.Index:
    """The served index of `kind` over L2-normalised `vectors` (its search settings saved in it)."""
    vectors = normalise(vectors)
    return serving_search(
        faiss_index_from_factory(factory_string(kind, len(vectors), nlist), vectors)
    )


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
    index_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in version_folders(index_dir)]
    version = f"v{max(numbers, default=0) + 1:04d}"
    staging = index_dir / f".{version}.partial"
    staging.mkdir()
    engine: dict[str, Any] = {"backend": FAISS}
    if milvus_uri is None:
        for name, array in vectors.items():
            faiss.write_index(build_faiss(array, kind), str(staging / f"{name}.faiss"))
        (staging / "listings.json").write_text(json.dumps(listings))
    else:
        # pymilvus: the `milvus` extra
        from fbmr.serving.index.milvus_index import connect, write_collections

        with contextlib.closing(connect(index_dir, milvus_uri, milvus_token)) as client:
            collections = write_collections(client, version, vectors, listings, kind)
        engine = {"backend": MILVUS, "milvus_uri": milvus_uri, "collections": collections}
    meta = {
        "format": INDEX_FORMAT,
        "version": version,
        **engine,
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


# An HNSW graph cannot drop a vector, nor an exact index without renumbering: a deleted
# listing's vector stays there, masked, until the dead vectors pass this share of the live ones
# (and DEAD_MIN), when the index is rebuilt from the live vectors (amortised: O(1) a delete).
DEAD_SHARE = 0.25
DEAD_MIN = 64


def _remove(index: Any, position: int) -> None:
    """Drop the vector of FAISS id `position` from an IVF index (faiss's stubs want a selector;
    it takes the ids)."""
    index.remove_ids(np.array([position], np.int64))


def _overwrite(index: Any, position: int, vector: NDArray[np.float32]) -> None:
    """Overwrite the stored vector of FAISS id `position` of an exact index, in place."""
    stored = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)
    stored[position * index.d : (position + 1) * index.d] = vector


def _ivf(index: faiss.Index) -> bool:
    """An IVF index on the CPU: removes a vector by its id, and adds one under a given id."""
    return isinstance(index, faiss.IndexIVF)


def _flat(index: faiss.Index) -> bool:
    """An exact index on the CPU, whose stored vectors can be overwritten in place."""
    return isinstance(index, faiss.IndexFlat)


class FaissIndex(LiveIndex):
    """One loaded FAISS index version, with the live updates of its directory applied.

    FAISS id i is position i of the listings. A put of a new listing adds its vectors at the next
    position. A put that replaces a listing overwrites its vectors at its position (exact and
    IVF indexes), so re-putting one listing never grows the index; an HNSW graph cannot drop or
    move a vector, so there the old one stays, masked by an ID selector in every search, like a
    deleted listing's (IVF indexes remove those at once). Once masked vectors pass `DEAD_SHARE`
    of the live ones, the index is rebuilt from the live vectors, renumbered. Searches run
    concurrently; an update waits for them and holds new ones meanwhile.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.listings: list[dict[str, Any]] = json.loads((path / "listings.json").read_text())
        self.indexes = {
            Kind(k): to_gpu_if_available(faiss.read_index(str(path / f"{k}.faiss")))
            for k in self.meta["kinds"]
        }
        self.columns = ListingColumns(self.listings)
        self.catch_up()

    def __contains__(self, listing_id: str) -> bool:
        return listing_id in self.columns.positions

    def get(self, listing_id: str) -> dict[str, Any] | None:
        position = self.columns.positions.get(listing_id)
        return None if position is None else dict(self.listings[position])

    def __len__(self) -> int:
        return len(self.columns.positions)

    def _delete(self, listing_id: str) -> None:
        position = self.columns.positions.get(listing_id)
        self.columns.remove(listing_id)
        if position is not None and all(_ivf(i) for i in self.indexes.values()):
            for index in self.indexes.values():
                _remove(index, position)
        self._compact_if_needed()

    def _put(self, update: Update) -> None:
        assert update.listing is not None and update.vectors is not None
        vectors = {kind: normalise(update.vectors[kind][None]) for kind in self.indexes}
        position = self.columns.positions.get(update.id)
        indexes = self.indexes.values()
        if position is not None and (all(map(_ivf, indexes)) or all(map(_flat, indexes))):
            for kind, index in self.indexes.items():  # the replaced vectors overwritten
                if _ivf(index):
                    _remove(index, position)
                    index.add_with_ids(vectors[kind], np.array([position], np.int64))
                else:
                    _overwrite(index, position, vectors[kind][0])
            self.listings[position] = update.listing
            self.columns.replace(position, update.listing)
            return
        new = np.array([self.columns.size], np.int64)
        for kind, index in self.indexes.items():
            if _ivf(index):  # its ids may have gaps (removed vectors): given, not counted
                index.add_with_ids(vectors[kind], new)
            else:
                index.add(vectors[kind])
        self.listings.append(update.listing)
        self.columns.append(update.listing)  # the listing of the same id, if any, is retired
        self._compact_if_needed()

    def _compact_if_needed(self) -> None:
        """Rebuild the indexes from the live vectors once masked ones pass DEAD_SHARE."""
        live = len(self.columns.positions)
        index = next(iter(self.indexes.values()))
        dead = index.ntotal - live
        if dead <= max(DEAD_MIN, DEAD_SHARE * live) or on_gpu(index) or _ivf(index):
            return
        alive = np.flatnonzero(self.columns.alive[: self.columns.size]).astype(np.int64)
        kind = IndexType(self.meta["type"])
        self.indexes = {
            k: build_faiss(i.reconstruct_batch(alive), kind) for k, i in self.indexes.items()
        }
        self.listings = [self.listings[i] for i in alive]
        self.columns = ListingColumns(self.listings)
        log.info(
            "index %s rebuilt from its %d live listings (%d vectors dropped)",
            self.version,
            live,
            dead,
        )

    def _search(
        self, kind: Kind, query: NDArray[np.float32], k: int, where: ListingFilter
    ) -> list[Hit]:
        with self._lock.reading():
            # `total` counts listings deleted or replaced too: FAISS still holds their vectors
            index, total = self.indexes[kind], self.columns.size
            if not where.active and self.columns.all_alive:
                scores, ids = index.search(query, min(k, total))
            else:
                keep = self.columns.mask(where)
                passing = int(keep.sum())
                if passing == 0:
                    return []
                if on_gpu(index):
                    # GPU indexes take no ID selector: ask for enough candidates that k pass,
                    # then keep those
                    wanted = min(total, k * max(1, total // passing) * 2, GPU_MAX_K)
                    scores, ids = index.search(query, wanted)
                    passed = keep[np.maximum(ids[0], 0)] & (ids[0] >= 0)
                    scores, ids = scores[:, passed][:, :k], ids[:, passed][:, :k]
                elif isinstance(index, faiss.IndexHNSW) and passing < EXACT_BELOW:
                    scores, ids = exact_among(index, keep, query, k)
                else:
                    params = search_parameters(index, keep, k)
                    scores, ids = index.search(query, min(k, passing), params=params)
            return [
                Hit(self.listings[i], float(s))
                for s, i in zip(scores[0], ids[0], strict=True)
                if i >= 0
            ]


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
