"""How well an embedding finds similar listings, measured where it is trained: the share of a
query listing's k nearest catalogue listings that are in its category (what `bench/similar_share.py`
asks a running facade, here by exact search over the stage's own embeddings, so every run
records it and two trunks or losses compare without serving either).

Listings, not photos, are what the index holds: a listing's photos are pooled into one
embedding as the index pools them (`fbmr.core.pooling.pool_embeddings`). Given each query's
class probabilities and a weight, the catalogue is ranked as the facade ranks it, the cosine
similarity raised by the prior on each candidate's category (`fbmr.core.ranking`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fbmr.core.pooling import pool_embeddings
from fbmr.core.ranking import DEFAULT_CANDIDATES, category_prior

# queries scored at once: a block of the similarity matrix stays a few MB
_BLOCK = 512


def by_listing(
    rows: NDArray[Any], owners: NDArray[Any]
) -> tuple[list[NDArray[Any]], NDArray[np.intp], NDArray[Any]]:
    """`rows` (one per photo) grouped by the listing that owns each: the groups, the index of
    each listing's first photo and the listing ids, listings in order of first appearance."""
    codes, uniques = pd.factorize(pd.Series(owners))
    order = np.argsort(codes, kind="stable")
    groups = np.split(np.asarray(rows)[order], np.cumsum(np.bincount(codes))[:-1])
    first = np.unique(codes, return_index=True)[1]
    return (groups if len(uniques) else []), first, np.asarray(uniques)


def per_listing(
    embeddings: NDArray[np.floating[Any]], labels: NDArray[np.int64], owners: NDArray[Any]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(embedding, label) per listing: each listing's photos pooled, listings in order of first
    appearance."""
    groups, first, _ = by_listing(embeddings, owners)
    if not groups:
        return np.zeros((0, embeddings.shape[1]), np.float32), labels[first]
    return np.stack([pool_embeddings(group) for group in groups]), labels[first]


def category_share(
    queries: NDArray[np.float32],
    query_labels: NDArray[np.int64],
    catalogue: NDArray[np.float32],
    catalogue_labels: NDArray[np.int64],
    k: int = 10,
    query_probabilities: NDArray[np.floating[Any]] | None = None,
    weight: float = 0.0,
    candidates: int = DEFAULT_CANDIDATES,
) -> float:
    """Mean share of each query's `k` nearest catalogue rows (cosine similarity, exact) that
    share its label; NaN without queries. With `query_probabilities` (one row per query) and a
    `weight`, ranked as the facade ranks: the `candidates` x k nearest re-ranked by cosine
    similarity plus the prior on each one's category (`fbmr.core.ranking`)."""
    if len(queries) == 0 or len(catalogue) == 0:
        return float("nan")
    k = min(k, len(catalogue))

    def unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return out

    shelf = unit(catalogue.astype(np.float32))
    shares = []
    for start in range(0, len(queries), _BLOCK):
        rows = queries[start : start + _BLOCK].astype(np.float32)
        block: NDArray[np.floating[Any]] = unit(rows) @ shelf.T
        if query_probabilities is not None and weight:
            block = _ranked(block, query_probabilities[start : start + _BLOCK], catalogue_labels,
                            weight, candidates * k)  # fmt: skip
        nearest = np.argpartition(-block, k - 1, axis=1)[:, :k]
        same = catalogue_labels[nearest] == query_labels[start : start + _BLOCK, None]
        shares.append(same.mean(axis=1))
    return float(np.concatenate(shares).mean())


def _ranked(
    similarities: NDArray[np.floating[Any]],
    probabilities: NDArray[np.floating[Any]],
    catalogue_labels: NDArray[np.int64],
    weight: float,
    candidates: int,
) -> NDArray[np.float64]:
    """Rank scores (queries, catalogue): each of a query's `candidates` nearest rows scored by its
    similarity plus the query's prior on its category, every other row -inf."""
    scores = np.full(similarities.shape, -np.inf)
    nearest = np.argpartition(-similarities, min(candidates, similarities.shape[1]) - 1, axis=1)
    rows = np.arange(len(similarities))[:, None]
    kept = nearest[:, :candidates]
    prior = category_prior(probabilities, weight)
    scores[rows, kept] = similarities[rows, kept] + prior[rows, catalogue_labels[kept]]
    return scores
