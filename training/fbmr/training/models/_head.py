"""`ClassifierHead`: embedding -> class logits, the head every classifier ends in."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Embedding -> class logits."""

    def __init__(self, embedding_dim: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ReLU(), nn.Dropout(dropout), nn.Linear(embedding_dim, num_classes)
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(embedding)
        return logits
