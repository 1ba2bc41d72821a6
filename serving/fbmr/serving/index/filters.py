"""Filters on a similar-listing search: category, price range, location, ids to leave out.

A filter is applied inside the FAISS search (an `IDSelector` in the search parameters), not to
the k results afterwards, so a query still gets k listings when k of them pass the filter. The
listing columns a filter reads are built once per loaded index version (`ListingColumns`), so a
filtered search costs one vectorised pass over them, then the search itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

# faiss's bundled type stubs lag its API (no SearchParametersHNSW, no keyword constructors)
_faiss: Any = faiss


@dataclass(frozen=True)
class ListingFilter:
    """Which catalogue listings a search may return; every condition given must hold."""

    category: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    location: str | None = None  # a substring of the listing's location, case ignored
    exclude_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def active(self) -> bool:
        return any(
            value is not None
            for value in (self.category, self.price_min, self.price_max, self.location)
        ) or bool(self.exclude_ids)


class ListingColumns:
    """The catalogue's listings as columns, to evaluate a filter on all of them at once.

    Position i is FAISS id i. Listings put while serving are appended (the columns grow by
    doubling, so an append costs O(1) on average); a deleted or replaced listing stays in place,
    marked not alive, since FAISS ids cannot be renumbered under a live index. `positions` maps
    each live listing's id to its position: how an id is found, and how a filter leaves ids out
    (one lookup an id, not a pass over every id).
    """

    def __init__(self, listings: Sequence[dict[str, Any]]) -> None:
        self.size = 0
        capacity = max(16, len(listings))
        self.positions: dict[str, int] = {}
        # categories as small integer codes: a filter compares integers, not strings
        self.codes: dict[str, int] = {}
        self.categories = np.zeros(capacity, dtype=np.int32)
        self.prices = np.full(capacity, np.nan, dtype=np.float64)
        self.locations = np.empty(capacity, dtype=object)
        self.alive = np.zeros(capacity, dtype=bool)
        for listing in listings:
            self.append(listing)

    def append(self, listing: dict[str, Any]) -> int:
        """Add a listing at the next position (the one of the same id, if any, is no longer
        alive); returns that position."""
        if self.size == len(self.alive):
            for name in ("categories", "prices", "locations", "alive"):
                column = getattr(self, name)
                grown = np.resize(column, 2 * len(column))
                setattr(self, name, grown)
        listing_id = str(listing["id"])
        self.remove(listing_id)
        i, self.size = self.size, self.size + 1
        self.positions[listing_id] = i
        self.replace(i, listing)
        return i

    def replace(self, i: int, listing: dict[str, Any]) -> None:
        """The columns at position `i` say `listing`'s fields (its id's position already)."""
        self.categories[i] = self.codes.setdefault(listing["category"], len(self.codes))
        # a listing without a price never passes a price bound
        price = listing.get("price")
        self.prices[i] = np.nan if price is None else float(price)
        self.locations[i] = (listing.get("location") or "").casefold()
        self.alive[i] = True

    def remove(self, listing_id: str) -> None:
        """Mark the listing of `listing_id` not alive; nothing when there is none."""
        old = self.positions.pop(listing_id, None)
        if old is not None:
            self.alive[old] = False

    @property
    def all_alive(self) -> bool:
        return len(self.positions) == self.size

    def mask(self, where: ListingFilter) -> NDArray[np.bool_]:
        """Which positions (FAISS ids) hold live listings that pass `where`."""
        n = self.size
        keep = self.alive[:n].copy()
        if where.category is not None:
            code = self.codes.get(where.category, -1)  # a category no listing has: none pass
            keep &= self.categories[:n] == code
        with np.errstate(invalid="ignore"):  # NaN prices compare False: filtered out
            if where.price_min is not None:
                keep &= self.prices[:n] >= where.price_min
            if where.price_max is not None:
                keep &= self.prices[:n] <= where.price_max
        if where.location is not None:
            needle = where.location.casefold()
            keep &= np.fromiter((needle in loc for loc in self.locations[:n]), bool, n)
        excluded = [self.positions[i] for i in where.exclude_ids if i in self.positions]
        keep[excluded] = False
        return keep


# Below `exact_limit(total)` listings passing a filter, an HNSW index is not walked at all: the
# passing listings' vectors are scored exactly. Scoring costs about `passing` dot products; a walk
# must visit about `total / passing` times its usual breadth to meet k of them (the whole index,
# for a filter that one listing passes). The two break even near passing ~ sqrt(total), times a
# constant measured at width 256 (docs/results.md): at 300,000 listings, 15,000 passing scored in
# 8 ms against a 15 ms walk and 30,000 in 11 against 8 (bench/filter_cost.py); at 1M, 10,000
# scored in 6-8 ms against a 68 ms walk, and 100,000 walked in 9 (bench/live_updates.py engines).
EXACT_BELOW = 4096
EXACT_PER_ROOT = 32


def exact_limit(total: int) -> int:
    """Below how many listings passing a filter an HNSW index of `total` scores them exactly."""
    return max(EXACT_BELOW, int(EXACT_PER_ROOT * math.sqrt(total)))


def exact_among(
    index: faiss.Index, keep: NDArray[np.bool_], query: NDArray[np.float32], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The k positions `keep` marks nearest to `query` (one row), scored exactly from the
    vectors `index` stores; as `index.search` answers, (scores, ids) of shape (1, <= k)."""
    ids = np.flatnonzero(keep).astype(np.int64)
    vectors = index.reconstruct_batch(ids)
    # einsum, not `vectors @ query[0]`: the matrix product goes to BLAS, whose own threads fight
    # the facade's search threads for the cores (8 concurrent searches scoring 1,000 passing
    # listings each: about 4 times the queries a second this way, bench/filter_cost.py)
    scores = np.einsum("ij,j->i", vectors, query[0]).astype(np.float32)
    best = np.argsort(-scores, kind="stable")[:k]
    return scores[best][None], ids[best][None]


def search_parameters(
    index: faiss.Index, keep: NDArray[np.bool_], k: int
) -> faiss.SearchParameters:
    """Search parameters that restrict `index` to the ids `keep` marks, keeping its own settings.

    The ids travel as a bitmap (one bit a listing: a filter costs a pass over the columns, not a
    hash set of the ids passing). HNSW only returns allowed neighbours among those it visits, so
    its search breadth grows as the filter narrows (about `total / passing` times as many
    candidates), which keeps k results coming back for a selective filter; the breadth is bounded
    by `total / exact_limit(total)` times its own, since narrower filters are scored exactly
    (`exact_among`).
    """
    bits = np.packbits(keep, bitorder="little")
    selector = _faiss.IDSelectorBitmap(len(keep), _faiss.swig_ptr(bits))
    params: Any
    if isinstance(index, faiss.IndexHNSW):
        narrowing = len(keep) / max(int(keep.sum()), exact_limit(len(keep)))
        breadth = int(min(len(keep), max(index.hnsw.efSearch, k) * narrowing))
        params = _faiss.SearchParametersHNSW(sel=selector, efSearch=breadth)
    elif isinstance(index, faiss.IndexIVF):
        params = _faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    else:
        params = _faiss.SearchParameters(sel=selector)
    # the selector and its bitmap must outlive the search: faiss keeps only pointers to them
    params.selector_ref = (selector, bits)
    result: faiss.SearchParameters = params
    return result
