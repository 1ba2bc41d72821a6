"""What the text model's benchmarks share: the default model over a prepared dataset's training
listings, and timing contenders side by side on the same batches.

Used by `text_optimiser.py` and `text_bag_forward.py`; not a benchmark itself.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fbmr.core.text import Tokenizer
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import token_dataset
from fbmr.training.models import TextModel

WARM_UP_STEPS = 2


def training_listings(
    data: Path, tokenizer: Path
) -> tuple[Tokenizer, torch.Tensor, torch.Tensor, int]:
    """The tokeniser, the train split's token ids and labels (tokenised as the text stage does)
    and the number of classes; torch on the 2 threads the stages use."""
    torch.set_num_threads(2)
    prepared = PreparedDataset(data)
    tok = Tokenizer.load(tokenizer)
    ids, *_, labels = token_dataset(prepared, prepared.products("train"), tok).tensors
    return tok, ids, labels, len(prepared.label_map.classes)


def default_model(tokenizer: Tokenizer, classes: int, ids: torch.Tensor) -> TextModel:
    """One member of the text stage's default ensemble (the members are alike and trained side
    by side, so one shows the cost of each), its table pruned by the IDF of the training `ids`."""
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
    (encoder,) = model.encoders
    assert encoder.bag is not None
    encoder.bag.set_idf(encoder.split(ids)[1])
    return model


def alternate(
    contenders: dict[str, Callable[[torch.Tensor], None]],
    listings: int,
    steps: int,
    batch_size: int,
) -> dict[str, float]:
    """Median seconds of each contender over `steps` batches of `batch_size` listing indices
    (out of `listings`), every contender on each batch in turn so machine load hits all alike,
    after `WARM_UP_STEPS` untimed batches."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    generator = torch.Generator().manual_seed(0)
    for step in range(steps + WARM_UP_STEPS):
        batch = torch.randint(listings, (batch_size,), generator=generator)
        for name, run in contenders.items():
            started = time.perf_counter()
            run(batch)
            if step >= WARM_UP_STEPS:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def compare(
    contenders: dict[str, Callable[[torch.Tensor], None]],
    listings: int,
    steps: int,
    batch_size: int,
    what: str,
    ratio: str,
) -> dict[str, float]:
    """`alternate`, printed: each contender's median time of `what`, then the first contender's
    time over the second's, labelled `ratio`."""
    medians = alternate(contenders, listings, steps, batch_size)
    width = max(map(len, medians))
    for name, median in medians.items():
        print(f"{name:{width}s} median {what} {median * 1000:8.1f} ms over {steps} steps")
    first, second, *_ = medians.values()
    print(f"{ratio}: {first / second:.1f}x")
    return medians
