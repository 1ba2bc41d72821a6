"""What one filtered similar-listing query costs the FAISS engine before its search: the filter's
pass over the listing columns, with `exclude_id` as the facade now applies it (through the
id-to-position map) beside the `np.isin` over every id it replaced, and HNSW search with a
filter that few listings pass (scored exactly) beside an unfiltered one.

    uv run python bench/filter_cost.py                  # 100k listings
    uv run python bench/filter_cost.py --listings 300000 --dim 256

Prints a table of milliseconds per query (the median of --repeat runs).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from common import median_ms

from fbmr.core.contract import Kind
from fbmr.serving.index.filters import ListingColumns, ListingFilter
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.store import open_version, save_version


def _queries_per_s(step: Callable[[], object], threads: int, seconds: float = 5.0) -> float:
    """How many times a second `threads` threads calling `step` in a loop get it done."""
    done, stop = [0] * threads, time.perf_counter() + seconds

    def loop(slot: int) -> None:
        while time.perf_counter() < stop:
            step()
            done[slot] += 1

    workers = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


@contextlib.contextmanager
def _blas_scoring() -> Iterator[None]:
    """`exact_among` as it was: the passing listings scored by a BLAS matrix product."""
    from fbmr.serving.index import faiss_index

    original = faiss_index.exact_among  # type: ignore[attr-defined]  # imported there

    def exact_among(index: Any, keep: Any, query: Any, k: int) -> Any:
        ids = np.flatnonzero(keep).astype(np.int64)
        scores = (index.reconstruct_batch(ids) @ query[0]).astype(np.float32)
        best = np.argsort(-scores, kind="stable")[:k]
        return scores[best][None], ids[best][None]

    faiss_index.exact_among = exact_among  # type: ignore[attr-defined]  # the name it calls
    try:
        yield
    finally:
        faiss_index.exact_among = original  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    n = args.listings
    listings = [
        {"id": f"L{i}", "name": "x", "category": f"c{i % 13}", "price": float(i % 500),
         "location": "Leeds"}
        for i in range(n)
    ]  # fmt: skip
    columns = ListingColumns(listings)
    every_id = np.array([item["id"] for item in listings], dtype=object)
    print(f"| {n:,} listings | ms a query |\n| --- | --- |")
    for count in (1, 100, 1000):
        excluded = frozenset(f"L{(i * 7919) % n}" for i in range(count))
        where = ListingFilter(exclude_ids=excluded)

        def before(ids: frozenset[str] = excluded) -> object:
            return ~np.isin(every_id, list(ids))  # what `mask` did for exclude_id

        cost = median_ms(before, 3)
        print(f"| exclude {count} ids, np.isin over every id (before) | {cost:.2f} |")

        def now(w: ListingFilter = where) -> object:
            return columns.mask(w)

        print(f"| exclude {count} ids, id-to-position map (now) | "
              f"{median_ms(now, args.repeat):.2f} |")  # fmt: skip

    import tempfile
    from pathlib import Path

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = save_version(Path(folder), {Kind.text: vectors}, listings, {}, IndexType.hnsw)
        index = open_version(path)
        query = vectors[1] + 0.1
        narrow = ListingFilter(category="c3", price_min=10, price_max=11)  # 1 in 6,500 pass
        for name, where in (("unfiltered", ListingFilter()), ("a filter few pass", narrow)):

            def search(w: ListingFilter = where) -> object:
                return index.search(Kind.text, query, 10, w)

            cost = median_ms(search, args.repeat)
            print(f"| HNSW search, {name} (now) | {cost:.2f} |")
        # filters that 1% to 10% pass: scored exactly below `exact_limit(total)` (now), beside
        # the walk that a fixed limit of 4,096 chose at any catalogue size (before)
        from fbmr.serving.index import filters

        limit = filters.exact_limit(n)
        for share in (0.01, 0.02, 0.05, 0.10):
            where = ListingFilter(price_max=round(500 * share) - 1)
            passing = int(columns.mask(where).sum())
            chosen = "scored exactly" if passing < limit else "walked"

            def filtered(w: ListingFilter = where) -> object:
                return index.search(Kind.text, query, 10, w)

            now_ms = median_ms(filtered, args.repeat)
            per_root, filters.EXACT_PER_ROOT = filters.EXACT_PER_ROOT, 0
            before_ms = median_ms(filtered, args.repeat)
            filters.EXACT_PER_ROOT = per_root
            print(f"| HNSW search, {passing:,} pass ({share:.0%}; now {chosen}) | "
                  f"before {before_ms:.2f}, now {now_ms:.2f} |")  # fmt: skip
        # scoring the passing listings from 8 threads at once (as the facade's searches run):
        # the dot products by einsum (now) beside BLAS's matrix product (before), whose own
        # threads competed with the searching ones
        few = ListingFilter(price_max=round(500 * 0.01) - 1)
        now_qps = _queries_per_s(lambda: index.search(Kind.text, query, 10, few), threads=8)
        with _blas_scoring():
            before_qps = _queries_per_s(lambda: index.search(Kind.text, query, 10, few), threads=8)
        print(f"| HNSW search, 1% pass, scored exactly, 8 threads: queries/s | "
              f"before {before_qps:,.0f}, now {now_qps:,.0f} |")  # fmt: skip
        # before: the graph walked with its breadth raised to total / passing (here, all of it)
        filters.EXACT_BELOW, filters.EXACT_PER_ROOT = 1, 0
        cost = median_ms(lambda: index.search(Kind.text, query, 10, narrow), 3)
        print(f"| HNSW search, a filter few pass, breadth unbounded (before) | {cost:.2f} |")


if __name__ == "__main__":
    main()
