"""The similar-listing share training records: exact nearest neighbours by cosine, a listing's
photos pooled as the index pools them."""

from __future__ import annotations

import numpy as np
import pytest

from fbmr.training.retrieval import category_share, per_listing


def test_share_counts_the_nearest_catalogue_rows_in_the_querys_category():
    catalogue = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    queries = np.array([[1, 0.05], [0.2, 1]], dtype=np.float32)
    assert category_share(queries, np.array([0, 1]), catalogue, labels, k=2) == 1.0
    # a query of category 1 that looks like category 0's listings finds none of its own
    assert category_share(queries[:1], np.array([1]), catalogue, labels, k=2) == 0.0
    # k past the first neighbour: the second nearest of [1, 0.05] among 3 is half right
    assert category_share(queries[:1], np.array([0]), catalogue, labels, k=3) == pytest.approx(
        2 / 3
    )
    assert np.isnan(category_share(queries[:0], np.array([]), catalogue, labels))


def test_a_listings_photos_pool_into_one_catalogue_row():
    embeddings = np.array([[1, 0], [0, 1], [5, 5]], dtype=np.float32)
    pooled, labels = per_listing(embeddings, np.array([3, 3, 4]), np.array(["a", "a", "b"]))
    assert labels.tolist() == [3, 4]
    np.testing.assert_allclose(pooled[0], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_array_equal(pooled[1], [5, 5])  # one photo: its own embedding


def test_ranked_with_the_category_prior_a_probable_category_comes_before_a_closer_one():
    # the query looks most like category 0's listings; its answer says category 1
    catalogue = np.array([[1, 0], [0.95, 0.3], [0.9, 0.4], [0.85, 0.5]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    query, label = np.array([[1, 0.1]], dtype=np.float32), np.array([1])
    answer = np.array([[0.1, 0.9]])
    assert category_share(query, label, catalogue, labels, k=2) == 0.0
    # weight 0 is plain nearest neighbours, whatever the answer
    assert category_share(query, label, catalogue, labels, 2, answer, weight=0.0) == 0.0
    # similarities 0.995, 0.979 (category 0), 0.950, 0.908 (category 1); log(0.9) - log(0.1) is
    # 2.2: at weight 0.05 that is 0.11, more than the gaps (at most 0.087)
    assert category_share(query, label, catalogue, labels, 2, answer, weight=0.05) == 1.0
    # at 0.01 (0.022) less than the gaps (at least 0.029)
    assert category_share(query, label, catalogue, labels, 2, answer, weight=0.01) == 0.0
    # only the nearest candidates x k are re-ranked: with 1 x 2 those are category 0's two
    assert category_share(query, label, catalogue, labels, 2, answer, 0.05, candidates=1) == 0.0
