import pandas as pd
import pytest

from fbmr.training.data.split import split_products


def _products(n_per_label: int, labels=("a", "b", "c")) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"product_id": f"{label}-{i}", "label": label}
            for label in labels
            for i in range(n_per_label)
        ]
    )


def test_ratios_hold_per_label():
    products = _products(100)
    split = split_products(products, val_ratio=0.1, test_ratio=0.2, seed=0)
    counts = pd.crosstab(products["label"], split)
    assert (counts["test"] == 20).all() and (counts["val"] == 10).all()
    assert (counts["train"] == 70).all()


def test_deterministic_for_a_seed_and_seed_dependent():
    products = _products(50)
    first = split_products(products, 0.1, 0.1, seed=3)
    assert first.equals(split_products(products, 0.1, 0.1, seed=3))
    assert not first.equals(split_products(products, 0.1, 0.1, seed=4))


def test_row_order_does_not_matter():
    products = _products(40)
    shuffled = products.sample(frac=1, random_state=1)
    assert split_products(products, 0.2, 0.2, 0).equals(
        split_products(shuffled, 0.2, 0.2, 0).sort_index()
    )


def test_growing_the_catalogue_moves_few_products():
    small, large = _products(100), _products(110)
    before = split_products(small, 0.1, 0.1, seed=0).set_axis(small["product_id"])
    after = split_products(large, 0.1, 0.1, seed=0).set_axis(large["product_id"])
    moved = (before != after[before.index]).mean()
    assert moved < 0.05


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (0.2, 1.0)])
def test_invalid_ratios_are_refused(val, test):
    with pytest.raises(ValueError, match="leave some products"):
        split_products(_products(5), val, test, 0)
