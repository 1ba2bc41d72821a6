"""Reading a prepared dataset (written by `fbmr data prepare`), the input of every training stage.

It turns a product into exactly the model inputs the facade will build from the same photo and
text, through `fbmr.core`: training must not preprocess on a path of its own.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fbmr.core.datasets import (
    PREPARED_IMAGES,
    PREPARED_LABEL_MAP,
    PREPARED_MANIFEST,
    PREPARED_PRODUCTS,
    photo_file,
)
from fbmr.core.image import ImageSpec, preprocess_image
from fbmr.core.labels import LabelMap
from fbmr.core.listing import model_text
from fbmr.core.text import Tokenizer
from fbmr.training.data.prepare import MANIFEST_FORMAT
from fbmr.training.data.split import SPLITS


class PreparedDataset:
    """A prepared dataset folder: its manifest, label map, product and image tables and photos."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / PREPARED_MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a prepared dataset (no {PREPARED_MANIFEST}); "
                "run `fbmr data prepare`"
            )
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"{manifest_path}: format {self.manifest.get('format')!r}, want {MANIFEST_FORMAT!r}"
            )
        self.label_map = LabelMap.load(self.root / PREPARED_LABEL_MAP)

    @cached_property
    def _products(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / PREPARED_PRODUCTS)

    @cached_property
    def _images(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / PREPARED_IMAGES)

    @staticmethod
    def _check_split(split: str | None) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; one of {SPLITS}")

    def products(self, split: str | None = None) -> pd.DataFrame:
        """One row per product (all splits, or one)."""
        self._check_split(split)
        table = self._products
        return table if split is None else table[table["split"] == split].reset_index(drop=True)

    def images(self, split: str | None = None) -> pd.DataFrame:
        """One row per photo (all splits, or one), with its product's label and split."""
        self._check_split(split)
        table = self._images
        return table if split is None else table[table["split"] == split].reset_index(drop=True)

    def product_rows(self, split: str) -> NDArray[np.int64]:
        """Each photo of `images(split)`, in order: its product's row in `products(split)`
        (texts and their answers are per product, photos' per photo)."""
        row = self.products(split).reset_index().set_index("product_id")["index"]
        rows: NDArray[np.int64] = self.images(split)["product_id"].map(row).to_numpy(np.int64)
        return rows

    def image_path(self, image_id: str) -> Path:
        return self.root / photo_file(image_id)

    def image_input(self, image_id: str, spec: ImageSpec) -> NDArray[np.float32]:
        """A photo as the image model's (3, H, W) float32 input, through fbmr.core."""
        return preprocess_image(self.image_path(image_id), spec)

    @staticmethod
    def text(product: pd.Series) -> str:
        """A product's text as the text model reads it: `fbmr.core.listing.model_text`, the
        function the facade, the client and the index build read a listing's text with."""
        return model_text(product["product_name"], product["product_description"])

    def text_input(self, product: pd.Series, tokenizer: Tokenizer) -> NDArray[np.int64]:
        """A product's text as the text model's (max_length,) int64 input, through fbmr.core."""
        return tokenizer.encode(self.text(product))
