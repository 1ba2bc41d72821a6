"""What the serving benchmarks share: the listings they send and the model inputs built from them.

Inputs are built through fbmr.core with the artifacts of the repository's latest export (image
settings, tokeniser), exactly as the facade builds them, so a change of the input format in
fbmr.core or in the export is followed here without edits. Tensor names come from
fbmr.core.contract, and Triton data types from the arrays themselves.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fbmr.core import contract
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.listing import listing_text
from fbmr.training.data.prepared import PreparedDataset


def listings(data: Path, count: int, split: str = "val") -> list[tuple[Path, str]]:
    """(photo path, text) of the first `count` listings of `split` that have a photo."""
    dataset = PreparedDataset(data)
    photos = dataset.images(split).drop_duplicates("product_id").set_index("product_id")
    products = dataset.products(split)
    products = products[products["product_id"].isin(photos.index)].head(count)
    return [
        (dataset.image_path(photos.loc[p["product_id"], "image_id"]), dataset.text(p))
        for _, p in products.iterrows()
    ]


@dataclass(frozen=True)
class Listing:
    """A listing as a client sends it: one photo's bytes and its text."""

    photo: bytes
    text: str


def load_listings(data: Path, split: str, count: int, photos: Path | None = None) -> list[Listing]:
    """The first `count` products of `split` with their first photo and their text. With
    `photos` (a folder of photos named by image id, as sellers uploaded them: the sample's
    `raw_images/`), the products of any split that have a photo there, with that photo."""
    products = pd.read_parquet(data / "products.parquet")
    images = pd.read_parquet(data / "images.parquet")
    if photos is None:
        products = products[products["split"] == split]
        first_photo = images.drop_duplicates("product_id").set_index("product_id")["image_id"]
        path = {p: data / "images" / f"{i}.jpg" for p, i in first_photo.items()}
    else:
        found = {f.stem: f for f in photos.iterdir() if f.is_file()}
        images = images[images["image_id"].isin(found.keys())].drop_duplicates("product_id")
        path = {row.product_id: found[cast(str, row.image_id)] for row in images.itertuples()}
    products = products[products["product_id"].isin(path.keys())].head(count)
    if products.empty:
        where = (
            f"{split} listings with a photo in {data}"
            if photos is None
            else f"photos of {data}'s listings in {photos}"
        )
        raise SystemExit(f"no {where}")
    return [
        Listing(
            path[p.product_id].read_bytes(), listing_text(p.product_name, p.product_description)
        )
        for p in products.itertuples()
    ]


@dataclass(frozen=True)
class ModelInputs:
    """Preprocessed inputs of N listings: one row per listing, by contract tensor name."""

    images: NDArray[Any]  # (N, 3, S, S), the dtype fbmr.core.image gives
    token_ids: NDArray[Any]  # (N, L) int64

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, rows: slice | NDArray[Any]) -> dict[str, NDArray[Any]]:
        """The product classifier's inputs for some rows."""
        return {
            contract.IMAGE: np.ascontiguousarray(self.images[rows]),
            contract.TOKEN_IDS: np.ascontiguousarray(self.token_ids[rows]),
        }


def model_inputs(repository: Path, items: list[tuple[Path, str]]) -> ModelInputs:
    """The listings as model inputs, preprocessed with the latest export's artifacts."""
    artifacts = ModelArtifacts.load(repository)
    images = np.stack([artifacts.image_input(photo) for photo, _ in items])
    tokens = np.stack([artifacts.text_input(text) for _, text in items])
    return ModelInputs(images, tokens)


def triton_datatype(array: NDArray[Any]) -> str:
    """Triton's name of an array's dtype (FP32, UINT8, INT64)."""
    return contract.Datatype.of_numpy(array.dtype.name)


def percentiles(values_ms: list[float] | NDArray[Any]) -> dict[str, float]:
    values = np.asarray(values_ms, dtype=np.float64)
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 99)} | {
        "mean_ms": float(values.mean())
    }


def median_ms(step: Callable[[], object], repeat: int) -> float:
    """The median wall time of `repeat` calls of `step`, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000
