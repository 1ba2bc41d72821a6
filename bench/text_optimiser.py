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

import statistics
import time
from pathlib import Path

import torch
import typer
from torch import nn

from fbmr.core.text import Tokenizer
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import token_dataset
from fbmr.training.models import TextModel
from fbmr.training.optim import SplitAdam, sparse_parameters


def default_model(tokenizer: Tokenizer, classes: int, ids: torch.Tensor) -> TextModel:
    """The text stage's default model shape, its table pruned by the IDF of the training `ids`
    (also the model `text_bag_forward.py` times)."""
    assert tokenizer.ngrams is not None, "the tokeniser has no n-grams: no bag to train"
    torch.manual_seed(0)
    model = TextModel(
        classes,
        vocab_size=tokenizer.vocab_size,
        word_dim=1,
        filters=0,
        max_words=tokenizer.max_words,
        ngram_buckets=tokenizer.ngrams.buckets,
        ngram_dim=64,
        ngram_kinds=tokenizer.ngrams.kinds,
    )
    assert model.encoder.bag is not None
    model.encoder.bag.set_idf(model.encoder.split(ids)[1])
    return model


def main(
    data: Path = typer.Argument(..., help="Prepared dataset."),
    tokenizer: Path = typer.Option(..., help="tokenizer.json of a run's word2vec stage."),
    steps: int = typer.Option(15, help="Timed steps per contender (after 2 warm-up steps)."),
    batch_size: int = typer.Option(64, help="Listings per step, as the text stage's default."),
) -> None:
    torch.set_num_threads(2)
    prepared = PreparedDataset(data)
    tok = Tokenizer.load(tokenizer)
    ids, *_, labels = token_dataset(prepared, prepared.products("train"), tok).tensors
    classes = len(prepared.label_map.classes)
    contenders = {}
    for name, sparse in (("dense AdamW", False), ("SplitAdam (sparse rows)", True)):
        model = default_model(tok, classes, ids)
        assert model.encoder.bag is not None
        model.encoder.bag.embedding.sparse = sparse
        contenders[name] = (model, SplitAdam(model.parameters(), sparse_parameters(model), 3e-3, 0))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    generator = torch.Generator().manual_seed(0)
    for step in range(steps + 2):
        batch = torch.randint(len(ids), (batch_size,), generator=generator)
        for name, (model, optimizer) in contenders.items():
            started = time.perf_counter()
            loss = nn.functional.cross_entropy(model(ids[batch])[1], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 2:
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:26s} median step {median * 1000:8.1f} ms over {steps} steps")
    dense, sparse = medians.values()
    print(f"dense / sparse step time: {dense / sparse:.1f}x")


if __name__ == "__main__":
    typer.run(main)
