"""One optimiser for models whose embedding tables take sparse gradients.

The text model's n-gram table has about a million rows and a batch touches a few thousand of
them. Declared `sparse=True`, the table's gradient holds those rows alone, and SparseAdam updates
them alone; AdamW (which takes no sparse gradients) updates the dense parameters. A dense Adam
over the whole 2^20-row table made each training step 4.3 times slower on the real sample; over
the table pruned to the n-grams the training listings weigh (the default, a tenth of the rows),
1.5 times slower (`bench/text_optimiser.py`, docs/results.md). `SplitAdam` steps both as one
optimiser, so the training loop and its checkpoints see a single object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def sparse_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The weights of `model`'s embedding tables that produce sparse gradients."""
    return [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.sparse
    ]


def mark_pretrained(module: nn.Module, pretrained: bool = True) -> None:
    """Mark (or unmark) `module` as pretrained weights being fine-tuned, which
    `pretrained_parameters` then finds."""
    # a plain attribute, as nn.Module keeps any value that is neither a tensor nor a module
    module.__dict__["pretrained"] = pretrained


def pretrained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weights of `model`'s modules marked `pretrained` (a pretrained encoder being
    fine-tuned), which take a learning rate of their own."""
    return [
        parameter
        for module in model.modules()
        if getattr(module, "pretrained", False)
        for parameter in module.parameters()
    ]


class SplitAdam:
    """AdamW over dense parameters beside SparseAdam over sparse ones (no weight decay there:
    decaying rows only when a batch touches them would penalise common n-grams most).

    `slow` dense parameters (pretrained weights being fine-tuned) step at `slow_lr` (None: at
    `lr`), a group of AdamW's own."""

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        sparse: Iterable[torch.Tensor],
        lr: float,
        weight_decay: float,
        slow: Iterable[torch.Tensor] = (),
        slow_lr: float | None = None,
    ) -> None:
        sparse_ids, slow_ids = {id(p) for p in sparse}, {id(p) for p in slow}
        parameters = list(parameters)
        dense = [p for p in parameters if id(p) not in sparse_ids | slow_ids]
        pretrained = [p for p in parameters if id(p) in slow_ids]
        rows = [p for p in parameters if id(p) in sparse_ids]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        groups: list[dict[str, Any]] = [{"params": dense}] if dense else []
        if pretrained:
            groups.append({"params": pretrained, "lr": slow_lr if slow_lr is not None else lr})
        if groups:
            self.optimizers["dense"] = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        if rows:
            self.optimizers["sparse"] = torch.optim.SparseAdam(rows, lr=lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(
                f"optimiser state for {sorted(state)}, this model trains {sorted(self.optimizers)}"
                " (a checkpoint from another version or model); retrain the stage with --force"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])
