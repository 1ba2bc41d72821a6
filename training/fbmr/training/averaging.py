"""Weight averaging (stochastic weight averaging, judged from `average_from` on): the running
mean of the weights at the end of each epoch, and batch-norm statistics measured again for the
averaged weights, as `torch.optim.swa_utils.update_bn` does, for the batch norms that train."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


def running_mean(
    mean: dict[str, torch.Tensor] | None, count: int, weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The mean of `count` state dicts (`mean`) with `weights` added, as a new dict. Entries that
    are not floating point (lookups of ids) are taken from `weights` as they are."""
    if mean is None:
        return {name: value.detach().clone() for name, value in weights.items()}
    return {
        name: mean[name] + (value.detach() - mean[name]) / (count + 1)
        if value.is_floating_point()
        else value.detach().clone()
        for name, value in weights.items()
    }


@torch.no_grad()
def measure_batch_norm(
    model: nn.Module,
    norms: Sequence[nn.modules.batchnorm._BatchNorm],
    batches: Iterable[Sequence[torch.Tensor]],
    most: int | None = None,
) -> int:
    """Set `norms`' statistics (batch norms of `model`) to those of the inputs `batches` give
    `model` (up to `most` samples), as torch.optim.swa_utils.update_bn does; the rest of the
    model runs in eval mode, as served. Returns the number of samples seen."""
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
        norm.train()
    seen = 0
    for inputs in batches:
        model(*inputs)
        seen += len(inputs[0])
        if most is not None and seen >= most:
            break
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return seen


def trained_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and any(p.requires_grad for p in m.parameters())
    ]
