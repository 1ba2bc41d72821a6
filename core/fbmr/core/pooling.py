"""One answer from a listing's several photos: how training scores a product and how the
facade answers a request with repeated `photo` parts, in one place so both pool alike.

- Probabilities: the mean of the photos' log-probabilities, renormalised (the normalised
  geometric mean). Each photo is one vote, and a photo that rules a class out weighs more
  than one that merely prefers another, which is what the training's per-product figures
  measured best against the arithmetic mean (docs/results.md). With one photo the answer is that
  photo's own, unchanged.
- Embeddings: the mean of the photos' L2-normalised embeddings, normalised again: the centre of
  the photos' directions, in the space the similar-listing index compares by cosine.

With one photo the answer is that photo's own, unchanged, so a one-photo request answers
exactly as it did before requests could carry several.

How many photos one request may carry is the API's (`fbmr.core.contract.MAX_PHOTOS`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# a probability of exactly 0 (float32 underflow) would make the log -inf and veto the class for
# every other photo; this floor keeps a veto strong but finite
_FLOOR = 1e-12


def log_softmax(logits: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Row-wise log-probabilities of `logits` (n, classes), computed stably."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    out: NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


def pool_log_probabilities(log_probabilities: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """One row of log-probabilities from a listing's photos' rows (n, classes): their mean,
    renormalised so its probabilities sum to 1."""
    rows = np.asarray(log_probabilities, dtype=np.float64)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"expected (photos, classes) log-probabilities, got shape {rows.shape}")
    return log_softmax(rows.mean(axis=0))


def pool_probabilities(probabilities: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """One probability row (classes,) from a listing's photos' rows (n, classes), as
    `pool_log_probabilities` pools them."""
    given = np.asarray(probabilities)
    if len(given) == 1:
        own: NDArray[np.float32] = given[0].astype(np.float32)
        return own
    rows = np.log(np.maximum(given.astype(np.float64), _FLOOR))
    return np.exp(pool_log_probabilities(rows)).astype(np.float32)


def pool_embeddings(embeddings: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """One embedding (dim,) from a listing's photos' embeddings (n, dim): L2-normalised, or
    with one photo that photo's own."""
    rows = np.asarray(embeddings, dtype=np.float64)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"expected (photos, dim) embeddings, got shape {rows.shape}")
    if len(rows) == 1:
        own: NDArray[np.float32] = np.asarray(embeddings)[0].astype(np.float32)
        return own
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), _FLOOR)
    centre = rows.mean(axis=0)
    pooled: NDArray[np.float32] = (centre / max(float(np.linalg.norm(centre)), _FLOOR)).astype(
        np.float32
    )
    return pooled
