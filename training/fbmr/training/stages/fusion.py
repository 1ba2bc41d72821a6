"""Stage 4: the fusion head over the image and text embeddings, one sample per photo (a
product's photo with its product's text).

With the trunks frozen (the default) both embeddings are computed once and only the head trains;
with --unfreeze-text the text encoder is fine-tuned with the head, as the seed proposed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fbmr.core.image import ImageSpec
from fbmr.core.text import Tokenizer
from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import PhotoDataset, token_dataset
from fbmr.training.engine import SPLITS, FitSettings, fit, load_checkpoint, predict, report
from fbmr.training.models import FusionHead, FusionModel
from fbmr.training.stages.image import build_image_model
from fbmr.training.stages.text import build_text_model
from fbmr.training.stages.word2vec import TOKENIZER


@torch.no_grad()
def _cached_image_embeddings(
    image_model: nn.Module, run_dir: Path, split: str, count: int, device: torch.device
) -> np.ndarray | None:
    """Image embeddings from the trunk features the image stage cached (cached mode), which
    saves a second pass of the trunk over every photo; None when there is no such cache."""
    path = run_dir / "image" / "features" / f"{split}.pt"
    if not path.is_file():
        return None
    features = torch.load(path, map_location="cpu", weights_only=True)["features"]
    if len(features) != count:
        return None
    image_model.eval()
    return image_model.encoder.projection(features.to(device)).cpu().numpy()


def train_fusion(
    config: TrainConfig, data: PreparedDataset, run_dir: Path, device: torch.device
) -> dict:
    stage_dir = run_dir / "fusion"
    classes = data.label_map.classes
    image_checkpoint = load_checkpoint(run_dir / "image" / "best.pt")
    text_checkpoint = load_checkpoint(run_dir / "text" / "best.pt")
    image_model = build_image_model(image_checkpoint["meta"], len(classes)).to(device)
    image_model.load_state_dict(image_checkpoint["model"])
    text_model = build_text_model(text_checkpoint["meta"], len(classes)).to(device)
    text_model.load_state_dict(text_checkpoint["model"])
    tokenizer = Tokenizer.load(run_dir / "word2vec" / TOKENIZER)
    spec = ImageSpec.from_dict(image_checkpoint["meta"]["image_spec"])
    settings = FitSettings(
        epochs=config.fusion_epochs,
        batch_size=config.fusion_batch_size,
        lr=config.fusion_lr,
        patience=config.patience,
        seed=config.seed,
        workers=config.workers,
        progress=config.progress,
    )

    sets = {}
    for split in SPLITS:
        images, products = data.images(split), data.products(split)
        photos = PhotoDataset(data, images, spec, augment=False)
        image_embeddings = None
        if image_checkpoint["meta"]["mode"] == "cached":
            image_embeddings = _cached_image_embeddings(
                image_model, run_dir, split, len(photos), device
            )
        if image_embeddings is None:
            image_embeddings = predict(image_model, photos, settings, device, f"image {split}")[0]
        texts = token_dataset(data, products, tokenizer)
        # Each photo takes its product's row: texts are per product, samples per photo.
        row = products.reset_index(drop=True).reset_index().set_index("product_id")["index"]
        rows = torch.from_numpy(images["product_id"].map(row).to_numpy(dtype=np.int64, copy=True))
        labels = torch.from_numpy(images["label_id"].to_numpy(dtype=np.int64, copy=True))
        if config.unfreeze_text:
            second = texts.tensors[0][rows]
        else:
            second = torch.from_numpy(predict(text_model, texts, settings, device)[0])[rows]
        sets[split] = TensorDataset(torch.from_numpy(image_embeddings), second, labels)

    meta = {
        "embedding_dim": config.embedding_dim,
        "image_dim": image_checkpoint["meta"]["embedding_dim"],
        "text_dim": text_checkpoint["meta"]["embedding_dim"],
        "unfreeze_text": config.unfreeze_text,
        "text": text_checkpoint["meta"],
        "image": image_checkpoint["meta"],
    }
    head = FusionHead(meta["image_dim"], meta["text_dim"], len(classes), config.embedding_dim)
    model = FusionModel(copy.deepcopy(text_model.encoder), head)
    if not config.unfreeze_text:
        model.text_encoder.requires_grad_(False)
    trainable = model if config.unfreeze_text else head
    fields = {"stage": "fusion", "config": config.to_dict(), "classes": list(classes), "meta": meta}
    history = fit(
        trainable, sets["train"], sets["val"], stage_dir, settings, device, fields, saved=model
    )
    predictions = {s: predict(trainable, sets[s], settings, device)[1:] for s in SPLITS}
    extra = {"unit": "photo", "unfreeze_text": config.unfreeze_text}
    return report(stage_dir, "fusion model", history, predictions, classes, extra)
