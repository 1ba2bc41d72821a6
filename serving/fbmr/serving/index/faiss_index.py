"""The FAISS engine of the similar-listing index: `build_faiss` makes a version's index of a
kind over L2-normalised vectors, and `FaissIndex` serves a saved version, taking puts and
deletes in place (a vector removed where the index type allows it, marked dead and the index
compacted past `DEAD_SHARE` where it does not)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.serving.index.build import (
    factory_string,
    faiss_index_from_factory,
    normalise,
    on_gpu,
    serving_search,
    to_gpu_if_available,
)
from fbmr.serving.index.filters import (
    ListingColumns,
    ListingFilter,
    exact_among,
    exact_limit,
    search_parameters,
)
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import (
    Hit,
    LiveIndex,
)
from fbmr.serving.index.updates import Update

log = logging.getLogger(__name__)

GPU_MAX_K = 2048  # the most neighbours a faiss GPU search returns


def build_faiss(
    vectors: NDArray[np.float32], kind: IndexType = IndexType.auto, nlist: int = 0
) -> faiss.Index:
    """The served index of `kind` over L2-normalised `vectors` (its search settings saved in it)."""
    vectors = normalise(vectors)
    return serving_search(
        faiss_index_from_factory(factory_string(kind, len(vectors), nlist), vectors)
    )


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


def _stored(index: faiss.Index, ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """The vectors stored under `ids` (an IVF index looks them up by id through a map, made
    here when it has none)."""
    if on_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    ivf = faiss.try_extract_index_ivf(index)
    hashtable = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]  # not in faiss's stubs
    if ivf is not None and ivf.direct_map.type != hashtable:
        ivf.set_direct_map_type(hashtable)  # a table, not an array: the ids may have gaps
    vectors: NDArray[np.float32] = index.reconstruct_batch(ids)
    return vectors


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

    def live(self) -> tuple[list[dict[str, Any]], dict[Kind, NDArray[np.float32]]]:
        """The live listings and each kind's vectors of them, in position order: what a new
        version of this index holds (`fbmr index compact`)."""
        with self._lock.reading():
            alive = np.flatnonzero(self.columns.alive[: self.columns.size]).astype(np.int64)
            vectors = {kind: _stored(index, alive) for kind, index in self.indexes.items()}
            return [self.listings[i] for i in alive], vectors

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
                elif isinstance(index, faiss.IndexHNSW) and passing < exact_limit(total):
                    scores, ids = exact_among(index, keep, query, k)
                else:
                    params = search_parameters(index, keep, k)
                    scores, ids = index.search(query, min(k, passing), params=params)
            return [
                Hit(self.listings[i], float(s))
                for s, i in zip(scores[0], ids[0], strict=True)
                if i >= 0
            ]
