"""A similar-listing search ranked with the prior on each candidate's category (`fbmr.core.ranking`:
cosine similarity plus the weighted log-probability the query's answer gives the candidate's
category), over any engine of the live index.

One plain search, with the filter as given, for `candidates` x k listings, re-ranked by rank
score; the k best come back. A query that names a category (the prior is then one number for
every candidate), or a weight of 0, is the plain search for k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.ranking import category_prior
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.live_index import Hit, LiveIndex


def ranked_search(
    index: LiveIndex,
    kind: Kind,
    embedding: NDArray[np.float32],
    probabilities: NDArray[np.floating[Any]],
    classes: Sequence[str],
    k: int,
    where: ListingFilter,
    weight: float,
    candidates: int,
) -> list[Hit]:
    """The `k` listings of `index` that pass `where` with the highest rank score, among the
    `candidates` x k nearest, for a query of `embedding` whose class `probabilities` (in the
    order of `classes`) the model gave; each keeps its cosine similarity as its `score`."""
    if where.category is not None or weight == 0:
        return index.search(kind, embedding, k, where)
    prior = dict(zip(classes, category_prior(probabilities, weight).tolist(), strict=True))
    lowest = min(prior.values())  # a category the model does not know: as if ruled out
    ranked = [
        replace(hit, rank_score=hit.score + prior.get(hit.listing["category"], lowest))
        for hit in index.search(kind, embedding, candidates * k, where)
    ]
    ranked.sort(key=lambda hit: hit.ranked_by, reverse=True)
    return ranked[:k]
