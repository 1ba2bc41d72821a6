"""Stage 2: the ResNet image model (transfer learning), in one of two modes:

- finetune: stages before `trainable_from` (layer4 by default) stay frozen; layer4, the
  projection and the head learn from augmented photos;
- cached: the whole trunk is frozen, its features are computed once per photo and cached, and
  only the projection and the head train on them (the CPU-friendly mode).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from fbmr.core.fileio import atomic_path
from fbmr.core.image import ImageSpec
from fbmr.training.config import ImageMode, TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import PhotoDataset
from fbmr.training.engine import (
    SPLITS,
    FitSettings,
    fit,
    make_loader,
    predict,
    report,
    seed_everything,
)
from fbmr.training.layout import RunLayout
from fbmr.training.models import RANDOM_INIT, Backbone, ImageModel

BN_CALIBRATION_PHOTOS = 2048


class _HeadOverFeatures(nn.Module):
    """The trainable part of an ImageModel, fed with cached trunk features."""

    def __init__(self, model: ImageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.encoder.projection(features)
        return embedding, self.model.head(embedding)


def build_image_model(meta: dict, num_classes: int) -> ImageModel:
    """An image model of the shape a checkpoint's `meta` describes, for its weights to load into."""
    return ImageModel(Backbone(meta["backbone"]), num_classes, meta["embedding_dim"], None)


@torch.no_grad()
def _trunk_features(
    model: ImageModel, photos: PhotoDataset, settings: FitSettings, device: torch.device, desc: str
) -> torch.Tensor:
    model.eval()
    batches = [
        model.encoder.trunk(images.to(device)).cpu()
        for images, _ in tqdm(
            make_loader(photos, settings, shuffle=False), desc=desc, disable=not settings.progress
        )
    ]
    return torch.cat(batches) if batches else torch.zeros(0)


@torch.no_grad()
def recalibrate_batch_norm(
    model: ImageModel, photos: PhotoDataset, settings: FitSettings, device: torch.device
) -> int:
    """Set the trunk's batch-norm statistics to those of up to BN_CALIBRATION_PHOTOS photos.

    A randomly initialised trunk carries placeholder statistics (mean 0, variance 1) that do not
    match its activations, which then vanish or explode through fifty layers and leave frozen
    features nearly constant. Measuring the real statistics once makes every layer's output
    normalised, so the frozen random trunk gives features a head can learn from.
    Returns the number of photos used.
    """
    norms = [m for m in model.encoder.trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch seen
    model.encoder.trunk.train()
    seen = 0
    loader = make_loader(photos, settings, shuffle=True)
    for images, _ in tqdm(loader, desc="batch-norm statistics", disable=not settings.progress):
        model.encoder.trunk(images.to(device))
        seen += len(images)
        if seen >= BN_CALIBRATION_PHOTOS:
            break
    for norm in norms:
        norm.momentum = 0.1
    model.eval()
    return seen


def _cached_features(
    model: ImageModel,
    photos: PhotoDataset,
    path: Path,
    key: dict,
    settings: FitSettings,
    device: torch.device,
) -> TensorDataset:
    """Trunk features of every photo of a split, computed once and kept on disk; a cache made
    with another trunk or other photos is recomputed."""
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached["key"] == key:
            return TensorDataset(cached["features"], cached["labels"])
    features = _trunk_features(model, photos, settings, device, f"features {path.stem}")
    labels = torch.from_numpy(photos.labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"key": key, "features": features, "labels": labels}, tmp)
    return TensorDataset(features, labels)


def load_cached_features(layout: RunLayout, split: str) -> torch.Tensor | None:
    """The trunk features of a split that the image stage cached (cached mode), in photo order;
    None when there is no such cache."""
    path = layout.image_features(split)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["features"]


def train_image(
    config: TrainConfig, data: PreparedDataset, run_dir: Path, device: torch.device
) -> dict:
    layout = RunLayout(run_dir)
    stage_dir = layout.stage("image")
    classes = data.label_map.classes
    spec = ImageSpec.for_image_size(config.image_size)
    seed_everything(config.seed)  # a random trunk must be the same one on resume
    model = ImageModel(
        Backbone(config.backbone), len(classes), config.embedding_dim, config.image_weights
    ).to(device)
    meta = {
        "backbone": config.backbone,
        "embedding_dim": config.embedding_dim,
        "image_spec": spec.to_dict(),
        "weights_source": model.weights_source,
        "mode": str(config.image_mode),
    }
    settings = FitSettings(
        epochs=config.image_epochs,
        batch_size=config.image_batch_size,
        lr=config.image_lr,
        patience=config.patience,
        seed=config.seed,
        workers=config.workers,
        progress=config.progress,
    )
    fields = {"stage": "image", "config": config.to_dict(), "classes": list(classes), "meta": meta}
    photos = {s: PhotoDataset(data, data.images(s), spec, augment=False) for s in SPLITS}
    if config.image_mode == ImageMode.cached:
        model.encoder.freeze_until("head")
        if model.weights_source == RANDOM_INIT:
            meta["batch_norm_recalibrated_on"] = recalibrate_batch_norm(
                model, photos["train"], settings, device
            )
        key = {
            "backbone": config.backbone,
            "weights": model.weights_source,
            "seed": config.seed,
            "image_spec": spec.to_dict(),
            "batch_norm": meta.get("batch_norm_recalibrated_on"),
        }
        sets = {
            s: _cached_features(
                model,
                photos[s],
                layout.image_features(s),
                {**key, "count": len(photos[s])},
                settings,
                device,
            )
            for s in SPLITS
        }
        trainable = _HeadOverFeatures(model)
        history = fit(
            trainable, sets["train"], sets["val"], stage_dir, settings, device, fields, saved=model
        )
        predictions = {s: predict(trainable, sets[s], settings, device)[1:] for s in SPLITS}
    else:
        model.encoder.freeze_until(config.trainable_from)
        train = PhotoDataset(data, data.images("train"), spec, augment=True)
        history = fit(model, train, photos["val"], stage_dir, settings, device, fields)
        predictions = {
            s: predict(model, photos[s], settings, device, f"eval {s}")[1:] for s in SPLITS
        }
    extra = {
        "unit": "photo",
        "backbone": config.backbone,
        "weights": model.weights_source,
        "mode": str(config.image_mode),
    }
    return report(
        stage_dir, f"image model ({config.backbone})", history, predictions, classes, extra
    )
