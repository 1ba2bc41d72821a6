"""The fusion stack's pieces on synthetic logits: folds, temperatures, stacking weights, and the
per-product and photo-share figures of the fusion report."""

import numpy as np
import pandas as pd
import pytest

from fbmr.training.calibration import fit_stacking, fit_temperature
from fbmr.training.fusion_report import decision_report, per_product
from fbmr.training.stages.crossfit import assign_folds

CLASSES = 5


def _informative(rng, targets, strength):
    """Logits that favour the target by `strength` over Gaussian noise."""
    logits = rng.normal(size=(len(targets), CLASSES)).astype(np.float32)
    logits[np.arange(len(targets)), targets] += strength
    return logits


def test_folds_are_stratified_deterministic_and_cover_every_product():
    products = pd.DataFrame({"label_id": np.repeat(np.arange(3), [10, 7, 5])})
    fold = assign_folds(products, 4, seed=0)
    assert (fold == assign_folds(products, 4, seed=0)).all()
    assert set(fold) == set(range(4))
    for label in range(3):
        counts = np.bincount(fold[products["label_id"] == label], minlength=4)
        assert counts.max() - counts.min() <= 1  # each category dealt evenly
    with pytest.raises(ValueError):
        assign_folds(products, 1, seed=0)


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, CLASSES, 4000)
    calibrated = _informative(rng, targets, 2.0)
    # sampled so that logits / 1 are calibrated: labels drawn from softmax(calibrated)
    probs = np.exp(calibrated) / np.exp(calibrated).sum(1, keepdims=True)
    drawn = np.array([rng.choice(CLASSES, p=p) for p in probs])
    assert fit_temperature(3.0 * calibrated, drawn) == pytest.approx(3.0, rel=0.15)


def test_stacking_weighs_an_informative_photo_and_drops_a_useless_one():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, CLASSES, 3000)
    text = _informative(rng, targets, 2.5)
    useful = fit_stacking(text, _informative(rng, targets, 1.5), targets)
    useless = fit_stacking(text, rng.normal(size=text.shape).astype(np.float32), targets)
    assert useful.image > 0.3 * useful.text
    assert useless.image < 0.1 * useless.text
    assert useful.nll["stacked"] < useful.nll["text"]
    assert useful.top1["stacked"] > useful.top1["text"]


def test_per_product_pools_mean_log_probability_and_report_counts_the_photo():
    # product a: two photos, one sure of class 1 and one mildly of class 0; product b: one photo
    logits = np.array([[0.0, 5.0], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    targets = np.array([1, 1, 0])
    products = np.array(["a", "a", "b"])
    pooled, pooled_targets, ids = per_product(logits, targets, products)
    assert list(ids) == ["a", "b"] and list(pooled_targets) == [1, 0]
    assert list(pooled.argmax(1)) == [1, 0]
    # without the photo the fusion model answers class 0 for every sample
    dropped = np.array([[1.0, 0.0]] * 3, dtype=np.float32)
    answers = {"text": dropped, "fusion": logits, "fusion_photo_dropped": dropped}
    report = decision_report(answers, targets, products, ("zero", "one"))
    assert report["photos"] == 3 and report["products"] == 2
    assert report["decided_by_photo"] == pytest.approx(1 / 3)
    # the mild photo of product a is wrong alone, right pooled with its sure one
    assert report["top1_per_photo"]["fusion"] == pytest.approx(2 / 3)
    assert report["top1_per_product"]["fusion"] == 1.0
    assert report["top1_per_product"]["fusion_photo_dropped"] == 0.5
    assert 0 < report["photo_share"] < 1
    one = report["per_category"]["one"]
    assert one["photos"] == 2 and one["products"] == 1
    assert one["top1_per_product"]["fusion"] == 1.0
    # photo b moves its logits by as much as the rest weighs: half the decision
    assert report["per_category"]["zero"]["photo_share"] == pytest.approx(0.5)
