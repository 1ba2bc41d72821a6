"""Deterministic train/val/test split by product, stratified by label.

Splitting products rather than photos keeps a product's two photos on one side; otherwise the
image model is scored on near-copies of what it trained on.
"""

from __future__ import annotations

import hashlib

import pandas as pd

SPLITS = ("train", "val", "test")


def _rank_key(product_id: str, seed: int) -> str:
    # A seeded hash instead of a shuffle: a product keeps its place in the order when the catalogue
    # grows, so re-preparing a larger export moves few products across sides.
    return hashlib.sha256(f"{seed}:{product_id}".encode()).hexdigest()


def split_products(
    products: pd.DataFrame, val_ratio: float, test_ratio: float, seed: int
) -> pd.Series:
    """A split name per product (aligned with `products`), with each label's products divided
    in the given ratios."""
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(
            f"val_ratio ({val_ratio}) and test_ratio ({test_ratio}) must be in [0, 1) "
            "and leave some products for training"
        )
    split = pd.Series("train", index=products.index, dtype=object)
    for _, group in products.groupby("label", sort=True):
        ordered = sorted(group.index, key=lambda i: _rank_key(str(group.at[i, "product_id"]), seed))
        n_test = round(len(ordered) * test_ratio)
        n_val = round(len(ordered) * val_ratio)
        split[ordered[:n_test]] = "test"
        split[ordered[n_test : n_test + n_val]] = "val"
    return split
