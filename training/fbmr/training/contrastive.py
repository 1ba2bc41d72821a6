"""A metric-learning loss for the image embedding, beside the classification loss: supervised
contrastive (Khosla et al., 2020), over the batch's unit embeddings, every other photo of the
same category a positive and the rest negatives.

The image embedding is what photo-only similar-listing search indexes; cross-entropy alone
shapes it only as far as the head needs to separate categories, so neighbours by cosine can be
close for reasons the head ignores. This pulls each photo towards the batch's photos of its
category and away from the others, in the very space search uses. A photo with no positive in
its batch adds nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from fbmr.training.engine import Objective

# Sharpness of the similarities (the paper's default, 0.1, is also best on its benchmarks)
TEMPERATURE = 0.1


def supervised_contrastive(
    embedding: torch.Tensor, target: torch.Tensor, temperature: float = TEMPERATURE
) -> torch.Tensor:
    """The batch's mean supervised contrastive loss: for each photo with a positive, minus the
    mean log-probability of its positives under a softmax over all other photos' similarities."""
    unit = nn.functional.normalize(embedding.float(), dim=1)
    similarity = unit @ unit.T / temperature
    self_mask = torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive = (target[:, None] == target[None, :]) & ~self_mask
    counts = positive.sum(1)
    has = counts > 0
    if not has.any():
        return embedding.sum() * 0.0  # keeps the graph: nothing to pull together here
    per_photo = log_prob.masked_fill(~positive, 0.0).sum(1)[has] / counts[has]
    return -per_photo.mean()


def with_contrastive(weight: float) -> Objective:
    """The training objective: the classification loss plus `weight` times the contrastive one."""

    def objective(
        embedding: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, loss_fn: nn.Module
    ) -> torch.Tensor:
        loss: torch.Tensor = loss_fn(logits, target) + weight * supervised_contrastive(
            embedding, target
        )
        return loss

    return objective
