"""The trained models as ONNX files, checked for parity against PyTorch before anything is written.

Encoders and heads are separate ONNX models so that Triton's ensembles can chain them and share
one image encoder between the image and the product classifiers:

    image_encoder        image [3, S, S] UINT8          -> image_embedding [E]
                         (pixels: normalised inside the graph, as fbmr.core.image does)
    image_head           image_embedding [E]             -> logits [C], probabilities [C]
    text_encoder         token_ids [L] INT64             -> text_embedding [E]
    text_head            text_embedding [E]              -> logits [C], probabilities [C]
    fusion_text_encoder  token_ids [L] INT64             -> text_embedding [E]
                         (only when --unfreeze-text changed the text encoder)
    fusion_head          image_embedding [E], text_embedding [E]
                                                         -> logits [C], probabilities [C],
                                                            combined_embedding [E]

Every model has a dynamic leading batch axis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fbmr.core.contract import (
    COMBINED_EMBEDDING,
    FUSION_HEAD,
    FUSION_TEXT_ENCODER,
    IMAGE,
    IMAGE_EMBEDDING,
    IMAGE_ENCODER,
    IMAGE_HEAD,
    LOGITS,
    PROBABILITIES,
    TEXT_EMBEDDING,
    TEXT_ENCODER,
    TEXT_HEAD,
    TOKEN_IDS,
    Datatype,
)
from fbmr.core.image import ImageSpec, image_pixels, normalize_pixels
from fbmr.core.labels import LabelMap
from fbmr.core.text import Tokenizer
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.models import FusionHead
from fbmr.training.trained import load_trained_models

log = logging.getLogger(__name__)

PARITY_SAMPLES = 8


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a served model, without its batch axis (Triton's `dims`)."""

    name: str
    dtype: Datatype
    dims: tuple[int, ...]


class _PixelEncoder(nn.Module):
    """The image encoder on uint8 pixels: scaling and normalisation happen in the graph, in the
    same order and precision as `fbmr.core.image.normalize_pixels`, so a request carries one byte
    per value instead of four and the served input is exactly the trained one."""

    mean: torch.Tensor  # buffers, (1, 3, 1, 1)
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, spec: ImageSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        scaled = pixels.to(torch.float32) / 255.0
        embedding: torch.Tensor = self.encoder((scaled - self.mean) / self.std)
        return embedding


def image_encoder(
    encoder: nn.Module, spec: ImageSpec, embedding_dim: int, photos: NDArray[np.uint8]
) -> OnnxModel:
    """The image encoder to export: uint8 pixels of `spec`'s size in, the embedding out, with
    `photos` (N, 3, S, S uint8) as its parity inputs."""
    size = spec.image_size
    return OnnxModel(
        IMAGE_ENCODER,
        _PixelEncoder(encoder, spec),
        [TensorSpec(IMAGE, Datatype.UINT8, (3, size, size))],
        [TensorSpec(IMAGE_EMBEDDING, Datatype.FP32, (embedding_dim,))],
        [photos],
    )


class _Head(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(embedding)
        return logits, torch.softmax(logits, dim=1)


class _FusionHead(nn.Module):
    def __init__(self, head: FusionHead) -> None:
        super().__init__()
        self.head = head

    def forward(
        self, image_embedding: torch.Tensor, text_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        combined, logits = self.head(image_embedding, text_embedding)
        return logits, torch.softmax(logits, dim=1), combined


@dataclass
class OnnxModel:
    """One model to export: its PyTorch module, its tensors, and the parity inputs."""

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    examples: list[NDArray[np.generic]] = field(repr=False)

    def __post_init__(self) -> None:
        self.module.eval()  # dropout off, batch norm on its running statistics


@dataclass
class RunModels:
    """What a run directory holds, ready to export."""

    models: list[OnnxModel]
    classes: list[str]
    image_spec: ImageSpec
    tokenizer: Tokenizer
    # which text encoder the product classifier uses: TEXT_ENCODER, or FUSION_TEXT_ENCODER
    product_text_encoder: str
    # the image trunk and where its starting weights came from, as the image stage recorded them
    image_trunk: dict[str, str]
    # the prepared dataset the run was trained on (parity inputs, INT8 calibration and gate)
    data: PreparedDataset

    @property
    def label_map(self) -> LabelMap:
        return LabelMap(self.classes)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@torch.no_grad()
def load_run(run_dir: Path, data: PreparedDataset | None = None) -> RunModels:
    """The models of a trained run with parity inputs from its validation data."""
    trained = load_trained_models(run_dir)
    if trained.fusion is None or trained.fusion_meta is None:
        raise FileNotFoundError(f"{run_dir} has no trained fusion model; train the fusion stage")
    image_model, text_model, fusion = trained.image, trained.text, trained.fusion
    classes, spec, tokenizer = trained.classes, trained.image_spec, trained.tokenizer
    data = data or PreparedDataset(trained.data)
    images = data.images("val").head(PARITY_SAMPLES)
    products = data.products("val").head(PARITY_SAMPLES)
    photos = np.stack([image_pixels(data.image_path(i), spec) for i in images["image_id"]])
    token_ids = tokenizer.encode_batch([data.text(row) for _, row in products.iterrows()])
    image_embedding = image_model.encoder(torch.from_numpy(normalize_pixels(photos, spec))).numpy()
    text_embedding = text_model.encoder(torch.from_numpy(token_ids)).numpy()
    n = min(len(image_embedding), len(text_embedding))
    fusion_text_embedding = fusion.text_encoder(torch.from_numpy(token_ids)).numpy()

    length = tokenizer.max_length
    e_image, e_text = trained.image_meta.embedding_dim, trained.text_meta.embedding_dim
    e_fusion, c = trained.fusion_meta.embedding_dim, len(classes)

    def head_outputs() -> list[TensorSpec]:
        return [
            TensorSpec(LOGITS, Datatype.FP32, (c,)),
            TensorSpec(PROBABILITIES, Datatype.FP32, (c,)),
        ]

    def text_encoder(name: str, module: nn.Module) -> OnnxModel:
        return OnnxModel(
            name,
            module,
            [TensorSpec(TOKEN_IDS, Datatype.INT64, (length,))],
            [TensorSpec(TEXT_EMBEDDING, Datatype.FP32, (e_text,))],
            [token_ids],
        )

    models = [
        image_encoder(image_model.encoder, spec, e_image, photos),
        OnnxModel(
            IMAGE_HEAD,
            _Head(image_model.head),
            [TensorSpec(IMAGE_EMBEDDING, Datatype.FP32, (e_image,))],
            head_outputs(),
            [image_embedding],
        ),
        text_encoder(TEXT_ENCODER, text_model.encoder),
        OnnxModel(
            TEXT_HEAD,
            _Head(text_model.head),
            [TensorSpec(TEXT_EMBEDDING, Datatype.FP32, (e_text,))],
            head_outputs(),
            [text_embedding],
        ),
        OnnxModel(
            FUSION_HEAD,
            _FusionHead(fusion.head),
            [
                TensorSpec(IMAGE_EMBEDDING, Datatype.FP32, (e_image,)),
                TensorSpec(TEXT_EMBEDDING, Datatype.FP32, (e_text,)),
            ],
            [*head_outputs(), TensorSpec(COMBINED_EMBEDDING, Datatype.FP32, (e_fusion,))],
            [image_embedding[:n], fusion_text_embedding[:n]],
        ),
    ]
    product_text_encoder = TEXT_ENCODER
    if not _same_weights(fusion.text_encoder, text_model.encoder):
        product_text_encoder = FUSION_TEXT_ENCODER
        models.append(text_encoder(FUSION_TEXT_ENCODER, fusion.text_encoder))
    meta = trained.image_meta
    trunk = {"backbone": str(meta.backbone), "weights": meta.weights_source}
    return RunModels(models, classes, spec, tokenizer, product_text_encoder, trunk, data)
