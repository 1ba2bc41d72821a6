"""The fusion head over the text and image models' answers, and the combined model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fbmr.training.models._head import ClassifierHead
from fbmr.training.models._text import TextEncoder, TextEnsembleEncoder


class FusionHead(nn.Module):
    """(image embedding, text embedding) -> (combined embedding, logits).

    The logits stack the calibrated logits of the image and text models' own heads (copies,
    frozen) with those of a head over the combined embedding:

        logits = t * text_head(text) + i * image_head(image) + c * combined_head(combined) + bias

    with t, i and c learned scalars that start at 1, 0 and 0 (and a bias per class, 0 unless set
    from the out-of-fold fit: `fbmr.training.calibration`), so the fusion model starts as
    exactly the text model and moves away from it only as far as the training data rewards: it
    leans on the text where the image side carries nothing, and gains where it does. During
    training the image embedding is dropped (zeroed) with probability `modality_dropout`, so the
    combined head cannot come to depend on it. The combined embedding, which similar-listing
    search indexes, is trained through its own head as well (`combined_logits`), so it stays a
    category-aware embedding whatever the weights settle to.

    Without `image_head` and `text_head` (stacking turned off), the logits are the combined
    head's alone.
    """

    bias: torch.Tensor

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        embedding_dim: int = 256,
        dropout: float = 0.3,
        image_head: nn.Module | None = None,
        text_head: nn.Module | None = None,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(image_dim + text_dim, embedding_dim)
        )
        self.head = ClassifierHead(embedding_dim, num_classes, dropout)
        self.modality_dropout = modality_dropout
        self.image_head: nn.Module | None = None
        self.text_head: nn.Module | None = None
        if image_head is not None and text_head is not None:
            self.image_head, self.text_head = image_head, text_head
            for frozen in (image_head, text_head):
                frozen.requires_grad_(False)
            # weights of the text, image and combined logits
            self.weights = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))
            # the stack's prior between classes: set, not trained by gradient (a buffer)
            self.register_buffer("bias", torch.zeros(num_classes))

    def combined(self, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        if self.training and self.modality_dropout > 0:
            keep = torch.rand(len(image_embedding), 1, device=image_embedding.device)
            image_embedding = image_embedding * (keep >= self.modality_dropout)
        combined: torch.Tensor = self.mlp(torch.cat([image_embedding, text_embedding], dim=1))
        return combined

    def forward(
        self, image_embedding: torch.Tensor, text_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined = self.combined(image_embedding, text_embedding)
        logits = self.head(combined)
        if self.image_head is not None and self.text_head is not None:
            t, i, c = self.weights
            logits = (
                t * self.text_head(text_embedding)
                + i * self.image_head(image_embedding)
                + c * logits
                + self.bias
            )
        return combined, logits

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # runs trained before the stack had a bias load with none (zeros): the same answers
        if self.image_head is not None and prefix + "bias" not in state_dict:
            state_dict[prefix + "bias"] = torch.zeros_like(self.bias)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def train(self, mode: bool = True) -> FusionHead:
        super().train(mode)
        # the copied heads keep their dropout off: they are frozen
        if self.image_head is not None and self.text_head is not None:
            self.image_head.eval()
            self.text_head.eval()
        return self

    def combined_logits(self, combined: torch.Tensor) -> torch.Tensor:
        """The combined head's own logits (its auxiliary training signal)."""
        logits: torch.Tensor = self.head(combined)
        return logits


class FusionModel(nn.Module):
    """(image embedding, token ids) -> (combined embedding, logits): the fusion head with the
    text encoder it was trained with (frozen by default, fine-tuned with --unfreeze-text), so
    export serves the very text encoder the head expects."""

    def __init__(self, text_encoder: TextEncoder | TextEnsembleEncoder, head: FusionHead) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.head = head

    def forward(
        self, image_embedding: torch.Tensor, token_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined, logits = self.head(image_embedding, self.text_encoder(token_ids))
        return combined, logits
