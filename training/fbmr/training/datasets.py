"""Torch datasets over a prepared dataset. Photos go through fbmr.core's decoding and
normalisation; only the random augmentation in between is training's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import v2

from fbmr.core.decode import decode_image
from fbmr.core.image import ImageSpec, normalize, pad_to_square, preprocess_image
from fbmr.core.text import Tokenizer
from fbmr.training.data.prepared import PreparedDataset


class PhotoDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(photo tensor, label id) per row of the images table."""

    def __init__(
        self, data: PreparedDataset, images: pd.DataFrame, spec: ImageSpec, augment: bool
    ) -> None:
        self.paths = [data.image_path(i) for i in images["image_id"]]
        self.labels = images["label_id"].to_numpy(dtype=np.int64, copy=True)
        self.spec = spec
        # Mild augmentation: listings are photographed centred and upright, so no rotations.
        self.augment = (
            v2.Compose(
                [
                    v2.RandomResizedCrop(spec.image_size, scale=(0.6, 1.0), antialias=True),
                    v2.RandomHorizontalFlip(),
                    v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                ]
            )
            if augment
            else None
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        if self.augment is None:
            array = preprocess_image(path, self.spec)  # exactly what the facade computes
        else:
            array = normalize(self.augment(pad_to_square(decode_image(path))), self.spec)
        return torch.from_numpy(array), torch.tensor(self.labels[index])


def token_dataset(
    data: PreparedDataset, products: pd.DataFrame, tokenizer: Tokenizer
) -> TensorDataset:
    """(token ids, label id) per product."""
    ids = tokenizer.encode_batch([data.text(row) for _, row in products.iterrows()])
    labels = products["label_id"].to_numpy(dtype=np.int64, copy=True)
    return TensorDataset(torch.from_numpy(ids), torch.from_numpy(labels))
