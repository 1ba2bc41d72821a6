"""Stage 4: the fusion head over the image and text embeddings, one sample per photo (a
product's photo with its product's text).

With the trunks frozen (the default) both embeddings are computed once and only the head trains;
with --unfreeze-text the text encoder is fine-tuned with the head, as the seed proposed.

Stacking (the default) weighs the text and image heads' logits. With `fusion_folds` (3 by
default) those weights are fit on out-of-fold predictions of the train split
(fbmr.training.stages.crossfit, fbmr.training.calibration): on the served models' own in-sample
predictions the text is always right, so a head fit there learns to ignore the photo. The
combined head then trains for its embedding (what similar-listing search indexes) on its own
loss, and its logits get no weight in the stack: they are fit on the very training listings, and
no held-out logits of it exist to weigh them by. Validation then keeps the fit weights unless
an input alone has the lower loss (`fbmr.training.stages.fusion_choice`). `fusion_folds` 0 fits
everything on the in-sample predictions, as before, judged by validation top-1. The served text
and image models stay the ones trained on the whole train split either way: only what the
fusion head is fit on changes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import TensorDataset

from fbmr.training.calibration import fit_stacking
from fbmr.training.checkpoints import load_checkpoint, save_checkpoint, stage_fields
from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import PhotoDataset, token_dataset
from fbmr.training.engine import SPLITS, fit, predict
from fbmr.training.fusion_report import decision_report, fused_and_dropped
from fbmr.training.layout import BEST, OUT_OF_FOLD, RunLayout
from fbmr.training.meta import FusionMeta
from fbmr.training.metrics import Report, report
from fbmr.training.models import FusionHead, FusionModel, ImageModel
from fbmr.training.stage_settings import fit_settings
from fbmr.training.stages.crossfit import OutOfFold, cross_fit
from fbmr.training.stages.fusion_choice import INPUTS_ALONE, hold_to_inputs, inputs_top1
from fbmr.training.stages.image_cache import load_cached_features
from fbmr.training.trained import TrainedModels, load_trained_models


@torch.no_grad()
def _cached_image_embeddings(
    trained: TrainedModels, split: str, count: int, device: torch.device
) -> NDArray[np.float32] | None:
    """Image embeddings from what the image stage cached (cached mode): the trainable stages
    run over the frozen ones' output, which saves a second pass of the whole trunk over every
    photo; None when there is no such cache."""
    if not trained.image_cached:
        return None
    features = load_cached_features(trained.layout, split)
    if features is None or len(features) != count:
        return None
    first = trained.image_meta.trainable_from
    encoder = trained.image.encoder
    chunks = [
        encoder.forward_from(chunk.to(device), first).cpu() for chunk in torch.split(features, 256)
    ]
    return torch.cat(chunks).numpy()


@torch.no_grad()
def _image_logits(
    image_model: ImageModel, image_embeddings: NDArray[np.float32]
) -> NDArray[np.float32]:
    image_model.eval()
    device = next(image_model.parameters()).device
    logits: NDArray[np.float32] = (
        image_model.head(torch.from_numpy(image_embeddings).to(device)).cpu().numpy()
    )
    return logits


class _CombinedAlone(nn.Module):
    """The fusion head answering with its combined head's logits alone: what trains when the
    stacking weights are fit out of fold (the combined embedding's own training)."""

    def __init__(self, head: FusionHead) -> None:
        super().__init__()
        self.head = head

    def forward(
        self, image_embedding: torch.Tensor, text_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined = self.head.combined(image_embedding, text_embedding)
        return combined, self.head.combined_logits(combined)


def train_fusion(
    config: TrainConfig, data: PreparedDataset, run_dir: Path, device: torch.device
) -> Report:
    stage_dir = RunLayout(run_dir).stage("fusion")
    classes = data.label_map.classes
    trained = load_trained_models(run_dir, device, fusion=False)
    image_model, text_model, tokenizer = trained.image, trained.text, trained.tokenizer
    spec = trained.image_spec
    settings = fit_settings(config, "fusion", pretrained=text_model.sentence is not None)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    sets = {}
    answers: dict[str, dict[str, NDArray[np.float32]]] = {}  # the input models', per photo
    text_rows: dict[str, NDArray[np.int64]] = {}  # each photo's product row
    products: dict[str, NDArray[np.str_]] = {}  # each photo's product
    for split in SPLITS:
        images, split_products = data.images(split), data.products(split)
        photos = PhotoDataset(data, images, spec, augment=False)
        image_embeddings = _cached_image_embeddings(trained, split, len(photos), device)
        if image_embeddings is None:
            image_embeddings = predict(image_model, photos, settings, device, f"image {split}")[0]
        texts = token_dataset(data, split_products, tokenizer)
        # Each photo takes its product's row: texts are per product, samples per photo.
        rows = torch.from_numpy(data.product_rows(split))
        labels = torch.from_numpy(images["label_id"].to_numpy(dtype=np.int64, copy=True))
        text_embeddings, text_logits, _ = predict(text_model, texts, settings, device)
        if config.unfreeze_text:
            second = texts.tensors[0][rows]
        else:
            second = torch.from_numpy(text_embeddings)[rows]
        sets[split] = TensorDataset(torch.from_numpy(image_embeddings), second, labels)
        answers[split] = {
            "image": _image_logits(image_model, image_embeddings),
            "text": text_logits[rows.numpy()],
        }
        text_rows[split] = rows.numpy()
        if split == "train":
            in_sample = text_logits
        products[split] = images["product_id"].astype(str).to_numpy()
    seconds["embeddings"] = time.perf_counter() - start

    meta = FusionMeta(
        embedding_dim=config.embedding_dim,
        image_dim=trained.image_meta.embedding_dim,
        text_dim=trained.text_meta.embedding_dim,
        unfreeze_text=config.unfreeze_text,
        text=trained.text_meta,
        image=trained.image_meta,
        stacked=config.fusion_stacking,
        modality_dropout=config.fusion_modality_dropout,
    )
    stacked = config.fusion_stacking
    out_of_fold = stacked and config.fusion_folds > 0
    if out_of_fold and config.unfreeze_text:
        # the stacking weights would be fit for a text encoder that the head then fine-tunes
        raise ValueError("--unfreeze-text needs --fusion-folds 0 (stacking fit in-sample)")
    head = FusionHead(
        meta.image_dim,
        meta.text_dim,
        len(classes),
        config.embedding_dim,
        image_head=copy.deepcopy(image_model.head) if stacked else None,
        text_head=copy.deepcopy(text_model.head) if stacked else None,
        modality_dropout=config.fusion_modality_dropout,
    )
    model = FusionModel(copy.deepcopy(text_model.encoder), head)
    if not config.unfreeze_text:
        model.text_encoder.requires_grad_(False)
    trainable = model if config.unfreeze_text else head
    fields = stage_fields("fusion", config, classes, meta)
    extra: Report = {"unit": "photo", "unfreeze_text": config.unfreeze_text}

    def with_combined_loss(
        combined: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, loss_fn: nn.Module
    ) -> torch.Tensor:
        # The combined head's own loss keeps the combined embedding (what similar-listing search
        # indexes) category-aware.
        combined_loss = nn.functional.cross_entropy(head.combined_logits(combined), target)
        loss: torch.Tensor = loss_fn(logits, target) + combined_loss
        return loss

    if out_of_fold:
        start = time.perf_counter()
        oof = cross_fit(config, data, trained, config.fusion_folds, device)
        seconds.update({f"out_of_fold_{k}": v for k, v in oof.seconds.items()})
        # what the stacking weights are fit on: per training photo, its product's out-of-fold
        # text logits and its own out-of-fold image logits
        per_photo = oof.text_logits[text_rows["train"]]
        stacking = fit_stacking(per_photo, oof.image_logits, sets["train"].tensors[2].numpy())
        stage_dir.mkdir(parents=True, exist_ok=True)
        oof.save(stage_dir / OUT_OF_FOLD)
        answers["train"].update(
            {"image_out_of_fold": oof.image_logits, "text_out_of_fold": per_photo}
        )
        extra["calibration"] = stacking.to_dict()
        seconds["out_of_fold"] = time.perf_counter() - start
        start = time.perf_counter()
        history = fit(
            _CombinedAlone(head),
            sets["train"],
            sets["val"],
            stage_dir,
            settings,
            device,
            fields,
            saved=model,
        )
        with torch.no_grad():
            head.weights.copy_(torch.tensor([stacking.text, stacking.image, 0.0]))
            head.bias.copy_(torch.tensor(stacking.bias))
        checkpoint = load_checkpoint(stage_dir / BEST)
        save_checkpoint(stage_dir / BEST, {**checkpoint, "model": model.state_dict()})
    else:
        if stacked:  # the record of what the stacking is fit on: the served models' answers
            served = OutOfFold.in_sample(in_sample, answers["train"]["image"], data)
            stage_dir.mkdir(parents=True, exist_ok=True)
            served.save(stage_dir / OUT_OF_FOLD)
        start = time.perf_counter()
        history = fit(
            trainable,
            sets["train"],
            sets["val"],
            stage_dir,
            settings,
            device,
            fields,
            saved=model,
            objective=with_combined_loss if stacked else None,
        )
    if stacked:
        alone = INPUTS_ALONE
        if out_of_fold:  # each input at its out-of-fold temperature, as the stack weighs it
            alone = {
                "text": (1 / stacking.text_temperature, 0.0, 0.0),
                "image": (0.0, 1 / stacking.image_temperature, 0.0),
            }
        extra["stacking"], extra["validation"] = hold_to_inputs(
            model, trainable, sets["val"], settings, device, stage_dir, alone, out_of_fold
        )
        extra["stacking_weights"] = model.head.weights.tolist()
        extra["stacking_bias"] = model.head.bias.tolist()
    seconds["head"] = time.perf_counter() - start
    extra["inputs_top1"] = {s: inputs_top1(answers[s], sets[s].tensors[2]) for s in SPLITS}
    decisions = {}
    for split in ("val", "test"):
        fused, dropped = fused_and_dropped(
            model, sets[split], config.unfreeze_text, settings, device
        )
        decisions[split] = decision_report(
            {**answers[split], "fusion": fused, "fusion_photo_dropped": dropped},
            sets[split].tensors[2].numpy(),
            products[split],
            classes,
        )
    extra["decisions"] = decisions
    extra["seconds"] = seconds
    predictions = {s: predict(trainable, sets[s], settings, device)[1:] for s in SPLITS}
    return report(stage_dir, "fusion model", history, predictions, classes, extra)
