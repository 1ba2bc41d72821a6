"""Stage 2: the image model, a pretrained trunk (fbmr.training.trunks) fine-tuned from its last
blocks (`trainable_from`; "auto": the trunk's own choice, layer4 of a ResNet, the last block of an
EfficientNet-Lite), in one of two modes:

- cached (the default, CPU-friendly): the frozen stages run once per photo and their output is
  cached on disk; the trainable stages, the projection and the head then learn from the cached
  maps, augmented where they are read (a random left-right flip and a shift of up to one cell),
  so an epoch costs the last blocks alone. `--trainable-from head` caches pooled features and
  trains the projection and head only.
- finetune: every epoch runs the whole trunk over augmented photos (the seed's transfer
  learning; what a GPU affords).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm

from fbmr.core.image import ImageSpec
from fbmr.core.ranking import DEFAULT_CATEGORY_WEIGHT
from fbmr.training.averaging import measure_batch_norm
from fbmr.training.checkpoints import stage_fields
from fbmr.training.config import ImageMode, TrainConfig
from fbmr.training.contrastive import with_contrastive
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import PhotoDataset
from fbmr.training.engine import SPLITS, Objective, fit, make_loader, predict, seed_everything
from fbmr.training.fusion_report import per_product
from fbmr.training.layout import RunLayout
from fbmr.training.meta import ImageMeta
from fbmr.training.metrics import Report, report, top1
from fbmr.training.models import ImageModel
from fbmr.training.optim import mark_pretrained
from fbmr.training.retrieval import category_share, per_listing
from fbmr.training.stage_settings import FitSettings, fit_settings
from fbmr.training.stages.image_cache import CachedFeatures, OverCache, cached_features
from fbmr.training.trunks import RANDOM_INIT, TRUNKS, Backbone

log = logging.getLogger(__name__)

BN_CALIBRATION_PHOTOS = 2048
SIMILAR_K = 10  # the similar listings a query shows, as bench/similar_share.py counts them


def first_trainable(config: TrainConfig) -> str:
    """The first trunk stage that trains: `trainable_from`, or with "auto" the trunk's last
    blocks (fbmr.training.trunks.TRUNKS)."""
    if config.trainable_from == "auto":
        return TRUNKS[Backbone(config.backbone)].last_blocks
    return config.trainable_from


def build_image_model(meta: ImageMeta, num_classes: int) -> ImageModel:
    """An image model of the shape a checkpoint's `meta` describes, for its weights to load into."""
    return ImageModel(meta.backbone, num_classes, meta.embedding_dim, None)


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
    trunk = model.encoder.trunk
    norms = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    loader = make_loader(photos, settings, shuffle=True)
    batches = tqdm(loader, desc="batch-norm statistics", disable=not settings.progress)
    seen = measure_batch_norm(
        trunk, norms, ((images.to(device),) for images, _ in batches), BN_CALIBRATION_PHOTOS
    )
    model.eval()
    return seen


def listing_figures(
    data: PreparedDataset,
    answers: dict[str, tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]],
) -> dict[str, object]:
    """Per listing, as the facade answers a listing's photos: top-1 with its photos' answers
    pooled, and the photo-only similar-listing share (`fbmr.training.retrieval`: val queries
    against the train listings, test queries against train and val, as the served catalogue
    holds them), by the embedding alone and ranked as the facade ranks (the prior on each
    candidate's category from the query's pooled answer, `fbmr.core.ranking`)."""
    top1_per_listing = {}
    listings = {}
    for s in SPLITS:
        embeddings, logits, targets = answers[s]
        owners = data.images(s)["product_id"].astype(str).to_numpy()
        pooled, pooled_targets, _ = per_product(logits, targets, owners)
        top1_per_listing[s] = top1(pooled, pooled_targets)
        listings[s] = (*per_listing(embeddings, targets, owners), np.exp(pooled))
    (train, train_labels, _), (val, val_labels, val_p) = listings["train"], listings["val"]
    test, test_labels, test_p = listings["test"]
    catalogue = (np.concatenate([train, val]), np.concatenate([train_labels, val_labels]))

    def shares(weight: float) -> dict[str, float]:
        return {
            "val": category_share(val, val_labels, train, train_labels, SIMILAR_K, val_p, weight),
            "test": category_share(test, test_labels, *catalogue, SIMILAR_K, test_p, weight),
        }

    return {
        "top1_per_listing": top1_per_listing,
        f"photo_similar_share_at_{SIMILAR_K}": shares(0.0),
        f"photo_similar_share_at_{SIMILAR_K}_served": shares(DEFAULT_CATEGORY_WEIGHT),
    }


def image_objective(config: TrainConfig) -> Objective | None:
    """The image stage's training loss when it is not the plain classification loss: with the
    contrastive term on the embedding (`image_contrastive`), for the served model and its
    out-of-fold refits alike."""
    return with_contrastive(config.image_contrastive) if config.image_contrastive else None


def train_image(
    config: TrainConfig, data: PreparedDataset, run_dir: Path, device: torch.device
) -> Report:
    layout = RunLayout(run_dir)
    stage_dir = layout.stage("image")
    classes = data.label_map.classes
    backbone = Backbone(config.backbone)
    trunk = TRUNKS[backbone]
    spec = ImageSpec.for_image_size(config.image_size, trunk.mean, trunk.std, config.image_crop)
    seed_everything(config.seed)  # a random trunk must be the same one on resume
    model = ImageModel(backbone, len(classes), config.embedding_dim, config.image_weights).to(
        device
    )
    first = first_trainable(config)
    model.encoder.freeze_until(first)
    # pretrained weights being fine-tuned take a learning rate of their own (fbmr.training.optim)
    mark_pretrained(model.encoder.trunk, model.weights_source != RANDOM_INIT)
    log.info("image trunk %s, weights: %s, trained from %s", backbone, model.weights_source, first)
    meta = ImageMeta(
        backbone=backbone,
        embedding_dim=config.embedding_dim,
        image_spec=spec,
        weights_source=model.weights_source,
        mode=config.image_mode,
        trainable_from=first,
    )
    # the trunk keeps a rate of its own when it starts from pretrained weights
    settings = fit_settings(config, "image", pretrained=model.weights_source != RANDOM_INIT)
    photos = {s: PhotoDataset(data, data.images(s), spec, augment=False) for s in SPLITS}
    cached_mode = config.image_mode == ImageMode.cached
    if cached_mode and model.weights_source == RANDOM_INIT:
        calibrated = recalibrate_batch_norm(model, photos["train"], settings, device)
        meta = replace(meta, batch_norm_recalibrated_on=calibrated)
    fields = stage_fields("image", config, classes, meta)
    objective = image_objective(config)
    if cached_mode:
        key = {
            "backbone": config.backbone,
            "weights": model.weights_source,
            # the seed draws a random trunk; pretrained frozen stages give the same maps for
            # any seed, so runs that differ by seed alone can share one cache (a `features`
            # folder linked between their run directories)
            **({"seed": config.seed} if model.weights_source == RANDOM_INIT else {}),
            "image_spec": spec.to_dict(),
            "batch_norm": meta.batch_norm_recalibrated_on,
            "trainable_from": first,
        }
        frozen = model.encoder.trunk[: model.encoder.cut(first)]
        cached = {
            s: cached_features(
                frozen,
                photos[s],
                layout.image_features(s),
                {**key, "count": len(photos[s])},
                settings,
                device,
            )
            for s in SPLITS
        }
        sets = {s: CachedFeatures(*cached[s], augment=False) for s in SPLITS}
        trainable = OverCache(model, first)
        train = CachedFeatures(*cached["train"], augment=True)
        history = fit(
            trainable,
            train,
            sets["val"],
            stage_dir,
            settings,
            device,
            fields,
            model,
            objective=objective,
        )
        answers = {s: predict(trainable, sets[s], settings, device) for s in SPLITS}
    else:
        train_photos = PhotoDataset(data, data.images("train"), spec, augment=True)
        history = fit(
            model,
            train_photos,
            photos["val"],
            stage_dir,
            settings,
            device,
            fields,
            objective=objective,
        )
        answers = {s: predict(model, photos[s], settings, device, f"eval {s}") for s in SPLITS}
    predictions = {s: answers[s][1:] for s in SPLITS}
    extra = {
        "unit": "photo",
        "backbone": config.backbone,
        "weights": model.weights_source,
        "mode": str(config.image_mode),
        "trainable_from": first,
        **listing_figures(data, answers),
    }
    return report(
        stage_dir, f"image model ({config.backbone})", history, predictions, classes, extra
    )
