"""How similar listings are ranked: by cosine similarity to the query, each candidate's raised by
a prior on its category, the log of the probability the model gives that category for the query.

A marketplace's "similar listings" are expected to be of the kind of thing asked about. A photo's
embedding alone puts a sofa near a table of the same wood; the classifier that answered the same
call knows which of the two the query is, so a candidate's category counts as well as its look:

    rank score = cosine similarity + weight x log p(candidate's category | query)

With weight 0 the ranking is plain nearest neighbours. A confident query keeps to its category;
an uncertain one (two categories near even) takes the nearest of either, so a wrong guess costs
less than a hard filter on the predicted category would. Visual search engines narrow the search
to the predicted category for the same reason (eBay's, KDD 2017); the prior is the soft form.

The prior re-ranks the plain search's nearest `candidates` x k listings. A listing further out
would make the k best only if its category's prior outweighed all the similarity it lacks, and
on the real sample re-ranking the nearest 20 already gives what ranking the whole catalogue
gives (docs/results.md). So a ranked search costs one plain search of more listings, on any
engine and with any filter, not a filtered search per category (at a million listings a search
that passes a tenth of them costs about 10 times an unfiltered one). The training stage scores
its similar-listing figure with the same ranking (`fbmr.training.retrieval`), and the facade
serves it (`fbmr.serving.index.ranked`), both from here; the weight was chosen on the
validation split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_CATEGORY_WEIGHT = 0.05
DEFAULT_CANDIDATES = 5  # times k
# a category the model rules out entirely still gets a finite (very low) prior
_FLOOR = 1e-6


def category_prior(probabilities: NDArray[np.floating[Any]], weight: float) -> NDArray[np.float64]:
    """What each category adds to a candidate's cosine similarity: `weight` x log p, per class
    (the last axis of `probabilities`)."""
    prior: NDArray[np.float64] = weight * np.log(
        np.maximum(np.asarray(probabilities, dtype=np.float64), _FLOOR)
    )
    return prior
