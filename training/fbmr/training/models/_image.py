"""The image model: a pretrained trunk (fbmr.training.trunks), a projection and a head."""

from __future__ import annotations

import torch
from torch import nn

from fbmr.training.models._head import ClassifierHead
from fbmr.training.trunks import Backbone, build_trunk, trainable_stages


class ImageEncoder(nn.Module):
    """Photo (N, 3, H, W) -> image embedding (N, embedding_dim): a trunk of named stages
    (fbmr.training.trunks), then a linear projection."""

    def __init__(self, trunk: nn.Sequential, features: int, embedding_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.projection = nn.Linear(features, embedding_dim)
        self.frozen_stages: tuple[str, ...] = ()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding: torch.Tensor = self.projection(self.trunk(images))
        return embedding

    def cut(self, first_trainable: str) -> int:
        """The index in the trunk of stage `first_trainable` ("head": past the whole trunk)."""
        names = list(self.trunk._modules)
        if first_trainable == "head":
            return len(names)
        if first_trainable not in trainable_stages(self.trunk):
            raise ValueError(
                f"unknown stage {first_trainable!r}; one of {trainable_stages(self.trunk)} or head"
            )
        return names.index(first_trainable)

    def forward_from(self, features: torch.Tensor, first_trainable: str) -> torch.Tensor:
        """The embedding from the output of the stages before `first_trainable` (what the
        image stage caches), through the rest of the trunk and the projection."""
        embedding: torch.Tensor = self.projection(self.trunk[self.cut(first_trainable) :](features))
        return embedding

    def freeze_until(self, first_trainable: str) -> None:
        """Freeze the trunk's stages before `first_trainable` (a stage name, or "head" to freeze
        the whole trunk)."""
        frozen = list(self.trunk._modules)[: self.cut(first_trainable)]
        for name in frozen:
            for parameter in getattr(self.trunk, name).parameters():
                parameter.requires_grad_(False)
        self.frozen_stages = tuple(frozen)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        # Frozen stages keep their batch-norm statistics: updating them would change the features
        # the trained layers learn from.
        for name in self.frozen_stages:
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
