"""Training-step time of the text model's n-gram bag: a dense AdamW step over the whole n-gram
table against `SplitAdam` (SparseAdam over the rows a batch touches), side by side in one run.

Both contenders train the same model shape (the defaults: 2^20 buckets x 64, the table pruned to
the n-grams the training listings weigh, as the text stage does) on the same batches of a prepared
dataset's training listings, tokenised as the text stage does; the steps alternate
between the two so machine load hits both alike. Prints the median step time of each and their
ratio.

    python bench/text_optimiser.py runs/real/prepared \
        --tokenizer runs/real/run/word2vec/tokenizer.json
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from text_timing import compare, default_model, training_listings
from torch import nn

from fbmr.training.models import TextEncoder, TextModel
from fbmr.training.optim import SplitAdam, sparse_parameters


def main(
    data: Path = typer.Argument(..., help="Prepared dataset."),
    tokenizer: Path = typer.Option(..., help="tokenizer.json of a run's word2vec stage."),
    steps: int = typer.Option(15, help="Timed steps per contender (after 2 warm-up steps)."),
    batch_size: int = typer.Option(64, help="Listings per step, as the text stage's default."),
) -> None:
    tok, ids, labels, classes = training_listings(data, tokenizer)

    def contender(sparse: bool) -> tuple[TextModel, SplitAdam]:
        model = default_model(tok, classes, ids)
        assert isinstance(model.encoder, TextEncoder)
        assert model.encoder.bag is not None
        model.encoder.bag.embedding.sparse = sparse
        return model, SplitAdam(model.parameters(), sparse_parameters(model), 3e-3, 0)

    def step(model: TextModel, optimizer: SplitAdam, batch: torch.Tensor) -> None:
        loss = nn.functional.cross_entropy(model(ids[batch])[1], labels[batch])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch's stub leaves it untyped
        optimizer.step()

    dense_model, dense_optimizer = contender(sparse=False)
    sparse_model, sparse_optimizer = contender(sparse=True)
    compare(
        {
            "dense AdamW": lambda batch: step(dense_model, dense_optimizer, batch),
            "SplitAdam (sparse rows)": lambda batch: step(sparse_model, sparse_optimizer, batch),
        },
        len(ids),
        steps,
        batch_size,
        "step",
        "dense / sparse step time",
    )


if __name__ == "__main__":
    typer.run(main)
