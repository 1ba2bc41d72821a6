"""Out-of-fold predictions of the text and image models on the train split, for the fusion stage
to fit its stacking on.

The served text and image models were trained on every training listing, so their predictions
for those listings are in-sample: the text is nearly always right there, and a fusion head fit on
them learns to ignore the photo. Here the training listings are cut into `folds` groups by
product (stratified by category; a product's photos stay together, since they share its text
and look alike), and for each group a text model and an image model are trained, by their
stages' own recipe, on the other groups alone and asked about it. Each training listing so gets
predictions from models that never saw it, of the kind the served models give on new listings.

What is refit per fold is what each stage trains over its cached inputs: the image model's
trainable blocks, projection and head over the frozen trunk's cached maps (the trunk is not run
again), and the text model's n-gram members and heads. The sentence member's fine-tuned layers
are the one exception: in a fold they stay as pretrained and only its projection and head train,
over a cache of all its layers run once, because fine-tuning them per fold would multiply the
text stage's cost (an epoch with them costs about seven of the bags'). A fold model trains for
as many epochs as its stage's best checkpoint took (validation picks among them, as it did), so
it is trained as long as the model it stands for.

`OutOfFold` records which products each fold's models saw, so a test can check that no training
listing's prediction comes from a model that saw it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.stages.fold_refits import image_out_of_fold, text_out_of_fold
from fbmr.training.trained import TrainedModels

log = logging.getLogger(__name__)


@dataclass
class OutOfFold:
    """Out-of-fold predictions on the train split and where each came from.

    text_logits: (products, C), in the order of `data.products("train")`, and text_model: the
    fold whose text model gave each row; image_logits and image_model the same per photo, in the
    order of `data.images("train")`; text_seen[f] and image_seen[f]: the products fold f's text
    and image models were trained on, as handed to their training; seconds: time per part.
    """

    text_logits: NDArray[np.float32]
    text_model: NDArray[np.int64]
    text_seen: list[list[str]]
    image_logits: NDArray[np.float32]
    image_model: NDArray[np.int64]
    image_seen: list[list[str]]
    seconds: dict[str, float]

    @classmethod
    def in_sample(
        cls,
        text_logits: NDArray[np.float32],
        image_logits: NDArray[np.float32],
        data: PreparedDataset,
    ) -> OutOfFold:
        """The served models' own answers on the train split, recorded the same way (one
        "fold", 0, that saw every training product): what in-sample stacking is fit on."""
        everything = sorted(str(p) for p in data.products("train")["product_id"])
        return cls(
            text_logits,
            np.zeros(len(text_logits), dtype=np.int64),
            [everything],
            image_logits,
            np.zeros(len(image_logits), dtype=np.int64),
            [everything],
            {},
        )

    def save(self, path: Path) -> None:
        torch.save(
            {
                "text_logits": torch.from_numpy(self.text_logits),
                "text_model": torch.from_numpy(self.text_model),
                "text_seen": self.text_seen,
                "image_logits": torch.from_numpy(self.image_logits),
                "image_model": torch.from_numpy(self.image_model),
                "image_seen": self.image_seen,
                "seconds": self.seconds,
            },
            path,
        )


def assign_folds(products: pd.DataFrame, folds: int, seed: int) -> NDArray[np.int64]:
    """A fold for each product row, stratified by category: each category's products, shuffled
    with `seed`, are dealt to the folds in turn."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, not {folds}")
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(products), dtype=np.int64)
    labels = products["label_id"].to_numpy()
    start = 0  # each category starts dealing where the last left off, so the folds stay even
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold[rows] = (start + np.arange(len(rows))) % folds
        start += len(rows)
    return fold


def cross_fit(
    config: TrainConfig,
    data: PreparedDataset,
    trained: TrainedModels,
    folds: int,
    device: torch.device,
) -> OutOfFold:
    """Out-of-fold text and image logits for every training product and photo (module doc)."""
    products = data.products("train")
    fold = assign_folds(products, folds, config.seed)
    fold_of_product = dict(zip(products["product_id"].astype(str), fold.tolist(), strict=True))
    photo_fold = np.array(
        [fold_of_product[p] for p in data.images("train")["product_id"].astype(str)],
        dtype=np.int64,
    )
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="fbmr-folds-") as scratch:
        start = time.perf_counter()
        text = text_out_of_fold(config, data, trained, fold, device, Path(scratch))
        seconds["text"] = time.perf_counter() - start
        start = time.perf_counter()
        image = image_out_of_fold(config, data, trained, photo_fold, device, Path(scratch))
        seconds["image"] = time.perf_counter() - start
    log.info("out-of-fold predictions: text %.0f s, image %.0f s", *seconds.values())
    return OutOfFold(
        text.logits, text.model, text.seen, image.logits, image.model, image.seen, seconds
    )
