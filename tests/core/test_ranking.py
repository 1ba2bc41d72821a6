"""The similar-listing ranking's prior on a candidate's category."""

from __future__ import annotations

import numpy as np

from fbmr.core.ranking import category_prior


def test_the_prior_rises_with_the_categorys_probability_and_is_nothing_at_weight_0():
    probabilities = np.array([0.7, 0.2, 0.1, 0.0])
    prior = category_prior(probabilities, 0.05)
    assert prior[0] > prior[1] > prior[2] > prior[3]
    assert np.all(prior <= 0) and np.isfinite(prior[3])  # ruled out: very low, still a number
    np.testing.assert_allclose(prior[:3], 0.05 * np.log(probabilities[:3]))
    np.testing.assert_array_equal(category_prior(probabilities, 0.0), np.zeros(4))
