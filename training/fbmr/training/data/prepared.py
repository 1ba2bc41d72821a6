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

from fbmr.core.image import ImageSpec, preprocess_image
from fbmr.core.labels import LabelMap
from fbmr.core.listing import model_text
from fbmr.core.text import Tokenizer
from fbmr.training.data.prepare import IMAGES, LABEL_MAP, MANIFEST, MANIFEST_FORMAT, PRODUCTS
from fbmr.training.data.split import SPLITS


class PreparedDataset:
    """A prepared dataset folder: its manifest, label map, product and image tables and photos."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a prepared dataset (no {MANIFEST}); run `fbmr data prepare`"
            )
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"{manifest_path}: format {self.manifest.get('format')!r}, want {MANIFEST_FORMAT!r}"
            )
        self.label_map = LabelMap.load(self.root / LABEL_MAP)

    @cached_property
    def _products(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / PRODUCTS)

    @cached_property
    def _images(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / IMAGES)

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

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{image_id}.jpg"

    def image_input(self, image_id: str, spec: ImageSpec) -> np.ndarray:
        """A photo as the image model's (3, H, W) float32 input, through fbmr.core."""
        return preprocess_image(self.image_path(image_id), spec)

    @staticmethod
    def text(product: pd.Series) -> str:
        """A product's text as the text model reads it: `fbmr.core.listing.model_text` of its
        fields, the function the facade applies to the fields a client sends."""
        return model_text(name=product["product_name"], description=product["product_description"])

    def text_input(self, product: pd.Series, tokenizer: Tokenizer) -> np.ndarray:
        """A product's text as the text model's (max_length,) int64 input, through fbmr.core."""
        return tokenizer.encode(self.text(product))
