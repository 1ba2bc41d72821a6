"""The trained models of a run, rebuilt from its checkpoints: what the fusion stage trains on and
what export serves. Each checkpoint's `meta` (`fbmr.training.meta`) gives the shape of its model;
this module is the one place that turns a run directory back into modules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fbmr.core.image import ImageSpec
from fbmr.core.text import Tokenizer
from fbmr.training.checkpoints import load_checkpoint
from fbmr.training.config import ImageMode
from fbmr.training.layout import RunLayout
from fbmr.training.meta import FusionMeta, ImageMeta, TextMeta
from fbmr.training.models import ClassifierHead, FusionHead, FusionModel, ImageModel, TextModel
from fbmr.training.stages.image import build_image_model
from fbmr.training.stages.text import build_text_model


@dataclass
class TrainedModels:
    """A run's image and text models, and its fusion model once that stage has run, in
    evaluation mode, with what their inputs need (class names, photo settings, tokeniser)."""

    layout: RunLayout
    classes: list[str]
    image: ImageModel
    image_meta: ImageMeta
    text: TextModel
    text_meta: TextMeta
    tokenizer: Tokenizer
    fusion: FusionModel | None = None
    fusion_meta: FusionMeta | None = None
    data: str = ""  # the prepared dataset the image model was trained on

    @property
    def image_spec(self) -> ImageSpec:
        return self.image_meta.image_spec

    @property
    def image_cached(self) -> bool:
        """Whether the image stage cached its trunk's features (cached mode)."""
        return self.image_meta.mode == ImageMode.cached


def build_fusion_model(meta: FusionMeta, num_classes: int) -> FusionModel:
    """A fusion model (its text encoder and head) of the shape a checkpoint's `meta` describes."""
    stacked = meta.stacked
    text = build_text_model(meta.text, num_classes)
    head = FusionHead(
        meta.image_dim,
        meta.text_dim,
        num_classes,
        meta.embedding_dim,
        image_head=ClassifierHead(meta.image_dim, num_classes) if stacked else None,
        text_head=text.head if stacked else None,
        modality_dropout=meta.modality_dropout,
    )
    return FusionModel(text.encoder, head)


def load_trained_models(
    run_dir: str | Path, device: torch.device | None = None, fusion: bool = True
) -> TrainedModels:
    """The models of `run_dir` from their best checkpoints, on `device` (the CPU by default).

    The fusion model is loaded when `fusion` is set and the fusion stage has written its best
    checkpoint. Raises ValueError when the checkpoints disagree on the classes.
    """
    layout = RunLayout(Path(run_dir))
    device = device or torch.device("cpu")
    image_ckpt = load_checkpoint(layout.best("image"))
    text_ckpt = load_checkpoint(layout.best("text"))
    classes = list(image_ckpt["classes"])
    if classes != list(text_ckpt["classes"]):
        raise ValueError(f"the checkpoints in {layout.root} disagree on the class list")
    image_meta = ImageMeta.from_dict(image_ckpt["meta"], str(layout.best("image")))
    image = build_image_model(image_meta, len(classes))
    image.load_state_dict(image_ckpt["model"])
    text_meta = TextMeta.from_dict(text_ckpt["meta"], str(layout.best("text")))
    text = build_text_model(text_meta, len(classes))
    text.load_state_dict(text_ckpt["model"])
    models = TrainedModels(
        layout=layout,
        classes=classes,
        image=image.to(device).eval(),
        image_meta=image_meta,
        text=text.to(device).eval(),
        text_meta=text_meta,
        tokenizer=Tokenizer.load(layout.tokenizer),
        data=image_ckpt["config"]["data"],
    )
    if fusion and layout.best("fusion").is_file():
        fusion_ckpt = load_checkpoint(layout.best("fusion"))
        if list(fusion_ckpt["classes"]) != classes:
            raise ValueError(f"the checkpoints in {layout.root} disagree on the class list")
        fusion_meta = FusionMeta.from_dict(fusion_ckpt["meta"], str(layout.best("fusion")))
        model = build_fusion_model(fusion_meta, len(classes))
        model.load_state_dict(fusion_ckpt["model"])
        models.fusion, models.fusion_meta = model.to(device).eval(), fusion_meta
    return models
