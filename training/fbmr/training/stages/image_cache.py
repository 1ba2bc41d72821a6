"""The image stage's cache (cached mode): what the frozen trunk stages give for every photo,
computed once and kept on disk (`cached_features`, `load_cached_features`), read back augmented
(`CachedFeatures`: a random left-right flip and a shift of up to one cell), and the trainable
part of the image model fed from it (`OverCache`)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fbmr.core.fileio import atomic_path
from fbmr.training.datasets import PhotoDataset
from fbmr.training.engine import make_loader
from fbmr.training.layout import RunLayout
from fbmr.training.models import ImageModel
from fbmr.training.stage_settings import FitSettings


class OverCache(nn.Module):
    """The trainable part of an ImageModel (the stages from `first_trainable` on, the projection
    and the head), fed with what the frozen stages before it cached."""

    def __init__(self, model: ImageModel, first_trainable: str) -> None:
        super().__init__()
        self.model, self.first_trainable = model, first_trainable

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.encoder.forward_from(features, self.first_trainable)
        return embedding, self.model.head(embedding)


class CachedFeatures(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(features, label) per photo from a split's cache (stored as float16: half the disk and
    memory, far below the trained layers' noise). With `augment`, spatial maps are flipped left
    to right at random and shifted by up to one cell, edge cells repeated: the photo
    augmentation of finetune mode, applied where the trainable stages read."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, augment: bool) -> None:
        self.features, self.labels = features, labels
        self.augment = augment and features.dim() == 4

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features[index].float()
        if self.augment:
            if torch.rand(()) < 0.5:
                features = features.flip(-1)
            height, width = features.shape[-2:]
            dy, dx = torch.randint(0, 3, (2,)).tolist()
            padded = F.pad(features[None], (1, 1, 1, 1), mode="replicate")[0]
            features = padded[:, dy : dy + height, dx : dx + width]
        return features, self.labels[index]


@torch.no_grad()
def _frozen_features(
    frozen: nn.Module, photos: PhotoDataset, settings: FitSettings, device: torch.device, desc: str
) -> torch.Tensor:
    frozen.eval()
    batches = [
        frozen(images.to(device)).half().cpu()
        for images, _ in tqdm(
            make_loader(photos, settings, shuffle=False), desc=desc, disable=not settings.progress
        )
    ]
    return torch.cat(batches) if batches else torch.zeros(0)


def cached_features(
    frozen: nn.Module,
    photos: PhotoDataset,
    path: Path,
    key: dict[str, object],
    settings: FitSettings,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels): the frozen stages' output for every photo of a split, computed once
    and kept on disk (so a resumed run does not compute it again); a cache made with another
    trunk, cut or other photos is recomputed."""
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached["key"] == key:
            return cached["features"], cached["labels"]
    features = _frozen_features(frozen, photos, settings, device, f"features {path.stem}")
    labels = torch.from_numpy(photos.labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"key": key, "features": features, "labels": labels}, tmp)
    return features, labels


def load_cached_features(layout: RunLayout, split: str) -> torch.Tensor | None:
    """What the frozen stages gave for each photo of a split (cached mode), in photo order, as
    float32; None when there is no such cache."""
    path = layout.image_features(split)
    if not path.is_file():
        return None
    features: torch.Tensor = torch.load(path, map_location="cpu", weights_only=True)["features"]
    return features.float()
