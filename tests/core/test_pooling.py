"""Pooling a listing's photos: one photo answers as itself, several vote by their
log-probabilities, and embeddings meet at the centre of their directions."""

from __future__ import annotations

import numpy as np
import pytest

from fbmr.core.pooling import pool_embeddings, pool_log_probabilities, pool_probabilities


def test_one_photo_is_its_own_answer():
    row = np.array([[0.7, 0.2, 0.1]], dtype=np.float32)
    np.testing.assert_array_equal(pool_probabilities(row), row[0])
    embedding = np.array([[3.0, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(pool_embeddings(embedding), embedding[0])


def test_the_geometric_mean_lets_a_sure_photo_outvote_a_mild_one():
    # photo 1 mildly prefers class 0; photo 2 is sure it is not class 0
    rows = np.array([[0.6, 0.4], [0.02, 0.98]])
    pooled = pool_probabilities(rows)
    assert pooled.sum() == pytest.approx(1.0)
    expected = np.sqrt(rows[0] * rows[1])
    np.testing.assert_allclose(pooled, expected / expected.sum(), rtol=1e-6)
    assert pooled.argmax() == 1
    # the arithmetic mean would call the same pair a near tie; the pooled answer is clear
    assert pooled[1] > rows.mean(axis=0)[1] + 0.15


def test_a_probability_of_zero_vetoes_without_breaking_the_sum():
    pooled = pool_probabilities(np.array([[0.5, 0.5], [0.0, 1.0]], dtype=np.float32))
    assert np.isfinite(pooled).all() and pooled.sum() == pytest.approx(1.0)
    assert pooled[0] < 1e-5


def test_log_probabilities_pool_to_log_probabilities():
    rows = np.log(np.array([[0.6, 0.4], [0.2, 0.8]]))
    pooled = pool_log_probabilities(rows)
    assert np.exp(pooled).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        pool_log_probabilities(np.zeros((0, 2)))


def test_embeddings_pool_to_the_unit_centre_of_their_directions():
    # lengths do not weigh: a long vector counts as much as a short one
    pooled = pool_embeddings(np.array([[10.0, 0.0], [0.0, 0.1]]))
    np.testing.assert_allclose(pooled, [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        pool_embeddings(np.zeros((0, 4)))
