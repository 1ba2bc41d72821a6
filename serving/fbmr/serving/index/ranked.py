"""A similar-listing search ranked with the prior on each candidate's category (`fbmr.core.ranking`:
cosine similarity plus the weighted log-probability the query's answer gives the candidate's
category), over any engine of the live index.

One filtered search per category searched (the query's most probable ones), and the plain search,
merged by rank score: within a category the prior is one number, so each category's own k
nearest hold every listing of it that can make the k best, and the plain k nearest bring in a
listing of another category close enough to the query to count despite its prior (a listing's
own photo finds it whatever the model thinks of its category). The filter's other conditions
apply in each search. A query that names a category, or a weight of 0, is one plain search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.core.ranking import category_prior, searched_categories
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
    categories: int,
) -> list[Hit]:
    """The `k` listings of `index` that pass `where` with the highest rank score for a query of
    `embedding` whose class `probabilities` (in the order of `classes`) the model gave, in the
    order of their rank scores; each keeps its cosine similarity as its `score`."""
    if where.category is not None or weight == 0:
        return index.search(kind, embedding, k, where)
    prior = dict(zip(classes, category_prior(probabilities, weight).tolist(), strict=True))
    found = {hit.listing["id"]: hit for hit in index.search(kind, embedding, k, where)}
    for c in searched_categories(probabilities, categories):
        found.update(
            (hit.listing["id"], hit)
            for hit in index.search(kind, embedding, k, replace(where, category=classes[c]))
        )
    ranked = [
        # a catalogue category the model does not predict: the prior of a class ruled out
        replace(hit, rank_score=hit.score + prior.get(hit.listing["category"], min(prior.values())))
        for hit in found.values()
    ]
    ranked.sort(key=lambda hit: hit.ranked_by, reverse=True)
    return ranked[:k]
