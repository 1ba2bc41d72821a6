"""The n-gram bag's forward and backward: one masked pass per kind of n-gram (the bag before)
against one batched product over all kinds (`fbmr.training.models.NgramBag` now), side by side.

Both run on the same module (the default shape: 2^20 buckets x 64 pruned by the training
listings' IDF, the name's kinds) and the same batches of 64 real training listings, alternating;
prints the largest difference between their outputs, the median time of each and the ratio.

    python bench/text_bag_forward.py runs/real/prepared \
        --tokenizer runs/real/run/word2vec/tokenizer.json
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import typer
from text_timing import compare, default_model, training_listings

from fbmr.training.models import NgramBag, TextEncoder


def masked_per_kind(bag: NgramBag, ids: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The bag as it was: each kind summed by its own masked pass over (N, S, dim); no name
    dropout (both contenders run in eval mode)."""
    rows = ids if bag.row_of is None else bag.row_of[ids]
    weights = bag.weights[rows] * (1.0 + torch.log(counts.clamp(min=1).float()))
    embedded = bag.embedding(rows) * weights.unsqueeze(2)
    out = torch.zeros_like(embedded[:, 0])
    for lo, hi in bag.bounds:
        part = (ids > lo) & (ids <= hi)
        summed = torch.where(part.unsqueeze(2), embedded, 0.0).sum(dim=1)
        norm = torch.where(part, weights, 0.0).pow(2).sum(dim=1, keepdim=True)
        out = out + summed / norm.sqrt().clamp(min=1e-6)
    return out


def main(
    data: Path = typer.Argument(..., help="Prepared dataset."),
    tokenizer: Path = typer.Option(..., help="tokenizer.json of a run's word2vec stage."),
    steps: int = typer.Option(20, help="Timed steps per contender (after 2 warm-up steps)."),
    batch_size: int = typer.Option(64, help="Listings per step, as the text stage's default."),
) -> None:
    tok, ids, _, classes = training_listings(data, tokenizer)
    model = default_model(tok, classes, ids)
    assert isinstance(model.encoder, TextEncoder)
    bag = model.encoder.bag
    assert bag is not None
    bag.eval()
    forwards: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "a masked pass per kind": lambda n, c: masked_per_kind(bag, n, c),
        "one batched product": bag,
    }
    _, ngrams, counts = model.encoder.split(ids[:256])
    with torch.no_grad():
        outputs = [f(ngrams, counts) for f in forwards.values()]
    print(f"largest |difference| of the outputs: {(outputs[0] - outputs[1]).abs().max():.1e}")

    def forward_backward(forward: Callable[..., torch.Tensor], batch: torch.Tensor) -> None:
        _, ngrams, counts = model.encoder.split(ids[batch])
        forward(ngrams, counts).pow(2).sum().backward()  # type: ignore[no-untyped-call]
        bag.embedding.weight.grad = None

    compare(
        {name: partial(forward_backward, f) for name, f in forwards.items()},
        len(ids),
        steps,
        batch_size,
        "forward + backward",
        "masked / batched",
    )


if __name__ == "__main__":
    typer.run(main)
