"""The similar-listing ranking's prior on a candidate's category, and which categories a search
looks in."""

from __future__ import annotations

import numpy as np
import pytest

from fbmr.core.ranking import category_prior, searched_categories


def test_the_prior_rises_with_the_categorys_probability_and_is_nothing_at_weight_0():
    probabilities = np.array([0.7, 0.2, 0.1, 0.0])
    prior = category_prior(probabilities, 0.05)
    assert prior[0] > prior[1] > prior[2] > prior[3]
    assert np.all(prior <= 0) and np.isfinite(prior[3])  # ruled out: very low, still a number
    np.testing.assert_allclose(prior[:3], 0.05 * np.log(probabilities[:3]))
    np.testing.assert_array_equal(category_prior(probabilities, 0.0), np.zeros(4))


def test_a_search_looks_in_the_most_probable_categories_first():
    probabilities = np.array([0.1, 0.5, 0.05, 0.35])
    assert searched_categories(probabilities, 3) == [1, 3, 0]
    assert searched_categories(probabilities, 10) == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="at least 1"):
        searched_categories(probabilities, 0)
