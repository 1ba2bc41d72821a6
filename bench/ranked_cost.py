"""What ranking similar listings with the prior on their category costs the FAISS engine: one
search re-ranked (`fbmr.serving.index.ranked`: the 5 x k nearest, re-ranked) beside the plain
search for k, and beside the first design, one search filtered to each of the query's 3 most
probable categories plus the plain one, over an HNSW catalogue of 13 even categories.

    uv run python bench/ranked_cost.py                          # 100k listings
    uv run python bench/ranked_cost.py --listings 1000000 --dim 256

Prints a table of milliseconds per query (the median of --repeat runs over --queries queries).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import median_ms
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.ranking import DEFAULT_CANDIDATES, DEFAULT_CATEGORY_WEIGHT
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import LiveIndex
from fbmr.serving.index.ranked import ranked_search
from fbmr.serving.index.store import open_version, save_version

CLASSES = [f"c{c}" for c in range(13)]


def _per_category(index: LiveIndex, query: NDArray[Any], answer: NDArray[Any], k: int) -> object:
    """The first design: the plain search and one filtered to each of 3 probable categories."""
    hits = index.search(Kind.image, query, k)
    for c in np.argsort(-answer)[:3]:
        hits += index.search(Kind.image, query, k, ListingFilter(category=CLASSES[c]))
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    n, k = args.listings, args.k
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, args.dim)).astype(np.float32)
    listings = [{"id": f"L{i}", "name": "x", "category": CLASSES[i % 13]} for i in range(n)]
    queries = vectors[: args.queries] + 0.1
    answers = rng.dirichlet(np.full(13, 0.3), size=args.queries)
    with tempfile.TemporaryDirectory() as folder:
        path = save_version(Path(folder), {Kind.image: vectors}, listings, {}, IndexType.hnsw)
        index = open_version(path)
        pairs = list(zip(queries, answers, strict=True))
        steps = {
            f"plain search for k = {k}": lambda: [index.search(Kind.image, q, k) for q, _ in pairs],
            f"ranked: the {DEFAULT_CANDIDATES} x k nearest re-ranked (now)": lambda: [
                ranked_search(
                    index,
                    Kind.image,
                    q,
                    a,
                    CLASSES,
                    k,
                    ListingFilter(),
                    DEFAULT_CATEGORY_WEIGHT,
                    DEFAULT_CANDIDATES,
                )
                for q, a in pairs
            ],
            "ranked: 3 category-filtered searches + the plain one (first design)": lambda: [
                _per_category(index, q, a, k) for q, a in pairs
            ],
        }
        print(f"| {n:,} listings, HNSW, dim {args.dim} | ms a query |\n| --- | --- |")
        for name, step in steps.items():
            print(f"| {name} | {median_ms(step, args.repeat) / len(pairs):.2f} |", flush=True)


if __name__ == "__main__":
    main()
