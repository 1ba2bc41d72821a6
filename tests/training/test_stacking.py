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


def test_the_stack_learns_the_prior_its_inputs_miss():
    # both inputs favour the right class as often for every class, but class 0 is four times as
    # common as each other class: the stack's bias, not its weights, can say so
    rng = np.random.default_rng(2)
    prior = np.array([4.0, 1.0, 1.0, 1.0, 1.0]) / 8.0
    targets = rng.choice(CLASSES, size=6000, p=prior)
    text, image = _informative(rng, targets, 1.5), _informative(rng, targets, 1.0)
    stack = fit_stacking(text, image, targets)
    assert sum(stack.bias) == pytest.approx(0.0, abs=1e-9)
    assert stack.bias[0] - max(stack.bias[1:]) > 0.5  # log(4) = 1.4 if the inputs knew nothing
    assert stack.nll["stacked"] < min(stack.nll["text"], stack.nll["image"])
    weights_only = fit_stacking(text, image, targets, bias=False)
    assert weights_only.bias == [0.0] * CLASSES
    assert stack.nll["stacked"] < weights_only.nll["stacked"] - 0.01
    # where every class is as common, there is no prior to learn
    even = rng.integers(0, CLASSES, 6000)
    flat = fit_stacking(_informative(rng, even, 1.5), _informative(rng, even, 1.0), even)
    assert max(abs(b) for b in flat.bias) < 0.15


def test_a_fusion_head_saved_before_the_bias_loads_and_answers_as_it_did():
    import torch

    from fbmr.training.models import FusionHead
    from fbmr.training.models._head import ClassifierHead

    def head() -> FusionHead:
        torch.manual_seed(0)
        return FusionHead(
            8, 6, CLASSES, 4, 0.0, ClassifierHead(8, CLASSES), ClassifierHead(6, CLASSES)
        )

    saved = head().eval()
    with torch.no_grad():
        saved.weights.copy_(torch.tensor([1.0, 0.5, 0.0]))
    old = {k: v for k, v in saved.state_dict().items() if k != "bias"}
    loaded = head()
    loaded.bias.fill_(3.0)
    loaded.load_state_dict(old)
    loaded.eval()
    image, text = torch.randn(4, 8), torch.randn(4, 6)
    assert torch.equal(loaded.bias, torch.zeros(CLASSES))
    assert torch.allclose(loaded(image, text)[1], saved(image, text)[1])
    with torch.no_grad():
        loaded.bias.copy_(torch.arange(CLASSES, dtype=torch.float32))
    moved = loaded(image, text)[1] - saved(image, text)[1]
    assert torch.allclose(
        moved, torch.arange(CLASSES, dtype=torch.float32).expand(4, -1), atol=1e-5
    )


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
