"""The four models: ResNet image model, word2vec text CNN, and the fusion head over both.

Each classifier is an encoder (input -> embedding) followed by a head (embedding -> logits), so
export can serve the encoders and the heads as separate ONNX models chained in Triton, and the
similar-listing index can use the embeddings.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

# The stages of a ResNet, input to output; freezing "up to layer3" freezes all before layer4.
RESNET_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
RANDOM_INIT = "random initialisation"


class Backbone(StrEnum):
    resnet50 = "resnet50"
    resnet18 = "resnet18"


_WEIGHTS = {
    Backbone.resnet50: torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    Backbone.resnet18: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
}


def build_trunk(backbone: Backbone, weights: str | None = "imagenet") -> tuple[nn.Module, int, str]:
    """A torchvision ResNet without its classifier, its feature width, and where its weights
    came from.

    `weights` is "imagenet" (torchvision's weights enum: the local cache, else the network), a
    path to a state dict, or "none". Without weights the trunk starts from random values, with a
    warning: training goes on, only slower and to a lower accuracy. None builds the bare shape,
    silently, for a checkpoint's weights to be loaded into.
    """
    model = getattr(torchvision.models, backbone.value)(weights=None)
    source, reason = RANDOM_INIT, "--image-weights none"
    if weights == "imagenet":
        try:
            model.load_state_dict(_WEIGHTS[backbone].get_state_dict(progress=False))
            source = f"ImageNet ({_WEIGHTS[backbone].name})"
        except Exception as err:  # no network, blocked hub, corrupt cache: never fatal
            reason = f"ImageNet weights unavailable ({err})"
    elif weights not in ("none", None):
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model.load_state_dict(state, strict=False)
        source = f"state dict {weights}"
    if source == RANDOM_INIT and weights is not None:
        log.warning(
            "%s: the %s trunk starts from random initialisation, so it learns slower and ends "
            "less accurate; pass --image-weights PATH to use a local copy of the weights",
            reason,
            backbone.value,
        )
    features = model.fc.in_features
    model.fc = nn.Identity()
    return model, features, source


class ClassifierHead(nn.Module):
    """Embedding -> class logits."""

    def __init__(self, embedding_dim: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ReLU(), nn.Dropout(dropout), nn.Linear(embedding_dim, num_classes)
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)


class ImageEncoder(nn.Module):
    """Photo (N, 3, H, W) -> image embedding (N, embedding_dim)."""

    def __init__(self, trunk: nn.Module, features: int, embedding_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.projection = nn.Linear(features, embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.trunk(images))

    def freeze_until(self, first_trainable: str) -> None:
        """Freeze the trunk's stages before `first_trainable` (one of RESNET_STAGES, or "head"
        to freeze the whole trunk)."""
        if first_trainable != "head" and first_trainable not in RESNET_STAGES:
            raise ValueError(f"unknown stage {first_trainable!r}; one of {RESNET_STAGES} or head")
        frozen = (
            RESNET_STAGES
            if first_trainable == "head"
            else RESNET_STAGES[: RESNET_STAGES.index(first_trainable)]
        )
        for name in frozen:
            for parameter in getattr(self.trunk, name).parameters():
                parameter.requires_grad_(False)
        self.frozen_stages = frozen

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        # Frozen stages keep their batch-norm statistics: updating them would change the features
        # the trained layers learn from.
        for name in getattr(self, "frozen_stages", ()):
            getattr(self.trunk, name).eval()
        return self


class ImageModel(nn.Module):
    """Photo -> (image embedding, logits)."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        embedding_dim: int = 256,
        weights: str | None = "imagenet",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        trunk, features, self.weights_source = build_trunk(backbone, weights)
        self.encoder = ImageEncoder(trunk, features, embedding_dim)
        self.head = ClassifierHead(embedding_dim, num_classes, dropout)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(images)
        return embedding, self.head(embedding)


class TextEncoder(nn.Module):
    """Token ids (N, L) -> text embedding (N, embedding_dim): convolutions of several widths over
    word vectors, max-pooled over the text."""

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        embedding_dim: int = 256,
        filters: int = 128,
        widths: tuple[int, ...] = (2, 3, 4, 5),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(word_dim, filters, w, padding=w - 1) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(filters * len(widths), embedding_dim)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        words = self.words(token_ids).transpose(1, 2)  # (N, word_dim, L)
        pooled = [torch.relu(conv(words)).amax(dim=2) for conv in self.convs]
        return self.projection(self.dropout(torch.cat(pooled, dim=1)))


class TextModel(nn.Module):
    """Token ids -> (text embedding, logits)."""

    def __init__(self, num_classes: int, embedding_dim: int = 256, **encoder_args) -> None:
        super().__init__()
        self.encoder = TextEncoder(embedding_dim=embedding_dim, **encoder_args)
        self.head = ClassifierHead(embedding_dim, num_classes)

    def forward(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(token_ids)
        return embedding, self.head(embedding)


class FusionHead(nn.Module):
    """(image embedding, text embedding) -> (combined embedding, logits).

    The combined embedding is what similar-listing search indexes.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        embedding_dim: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(image_dim + text_dim, embedding_dim)
        )
        self.head = ClassifierHead(embedding_dim, num_classes, dropout)

    def forward(
        self, image_embedding: torch.Tensor, text_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined = self.mlp(torch.cat([image_embedding, text_embedding], dim=1))
        return combined, self.head(combined)


class FusionModel(nn.Module):
    """(image embedding, token ids) -> (combined embedding, logits): the fusion head with the
    text encoder it was trained with (frozen by default, fine-tuned with --unfreeze-text), so
    export serves the very text encoder the head expects."""

    def __init__(self, text_encoder: TextEncoder, head: FusionHead) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.head = head

    def forward(
        self, image_embedding: torch.Tensor, token_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(image_embedding, self.text_encoder(token_ids))
