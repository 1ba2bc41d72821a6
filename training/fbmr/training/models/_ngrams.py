"""`NgramBag`: a bag of hashed n-grams, the text model's first member, over the views of a
listing's text it reads (`VIEWS`)."""

from __future__ import annotations

import torch
from torch import nn

from fbmr.core.ngrams import KINDS, kind_bounds

# What an ensemble member's n-gram bag reads, by kind (fbmr.core.ngrams.KINDS, the name's kinds
# with their text's): members that read different views are more different models than members
# that differ only in their random start (measured in docs/results.md).
VIEWS: dict[str, tuple[str, ...]] = {"all": ("w", "c"), "words": ("w",), "chars": ("c",)}


class NgramBag(nn.Module):
    """Hashed n-gram ids (N, S) -> a bag-of-n-grams embedding (N, dim).

    Each distinct n-gram of a text is weighted by its sublinear term frequency in the text,
    1 + ln(count), times its inverse document frequency on the training texts (`weights`, a
    fixed buffer that `set_idf` fills; 0 for n-grams seen in fewer than `min_df` training texts,
    as TF-IDF's min_df drops them). Each kind of n-gram (word, character, and with `kinds` 4 the
    name's word and character n-grams, in the id ranges `fbmr.core.ngrams.kind_bounds` gives) is
    summed apart, each sum divided by the l2 norm of its weights, and the sums added: the
    embedding of one l2-normalised TF-IDF vector per kind, the representation of the strong
    linear baselines, learned end to end. One joint norm would let the character n-grams (about
    nine per word) drown the words, and a long description its title. Padding (id 0) weighs
    nothing. Written as embedding lookups, comparisons, a batched product and sums, which export
    to ONNX as they are.

    `name_dropout` drops the name's kinds of a training text with that probability, so the model
    also answers well for a text sent without its name marked (a free text).

    The table starts with one row per id. `set_idf` keeps rows only for the n-grams it weighs
    (seen in `min_df` training texts; the others weigh 0 and so never count): about a tenth of
    the 2^20 ids on the real sample, so the checkpoint and the exported text encoder shrink as
    much. `row_of` then maps each id to its row (0, the zero padding row, for the rest); `rows`
    rebuilds a table of that shape for a checkpoint to be loaded into.
    """

    weights: torch.Tensor  # buffers: each row's IDF weight, and each id's row once pruned
    row_of: torch.Tensor | None

    def __init__(
        self,
        buckets: int,
        dim: int,
        kinds: int = 2,
        name_dropout: float = 0.0,
        rows: int | None = None,
    ) -> None:
        super().__init__()
        self.bounds = kind_bounds(buckets, kinds)
        self.name_dropout = name_dropout
        self._new_table(rows if rows is not None else buckets, dim)
        if rows is None:
            self.register_buffer("row_of", None)
        else:
            self.register_buffer("row_of", torch.zeros(buckets + 1, dtype=torch.long))

    def _new_table(self, rows: int, dim: int) -> None:
        # sparse: a batch's gradient holds the rows of its n-grams alone (fbmr.training.optim)
        self.embedding = nn.Embedding(rows + 1, dim, padding_idx=0, sparse=True)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        weights = torch.ones(rows + 1)
        weights[0] = 0.0
        self.register_buffer("weights", weights)

    @property
    def rows(self) -> int | None:
        """Rows of the table besides padding when it holds only the weighed n-grams (None: one
        per id)."""
        return None if self.row_of is None else self.embedding.num_embeddings - 1

    @torch.no_grad()
    def set_idf(self, ids: torch.Tensor, min_df: int = 2, view: str = "all") -> None:
        """Weights from the training texts' n-gram ids (N, S): smoothed inverse document
        frequency, ln((1 + N) / (1 + df)) + 1, and 0 below `min_df` texts or outside the kinds
        `view` reads (`VIEWS`); then a fresh table with rows for the weighed n-grams alone.
        Called once, before training."""
        if self.row_of is not None:
            raise ValueError("the n-gram table already holds only its weighed n-grams")
        buckets = self.bounds[-1][1]
        df = torch.bincount(ids.flatten(), minlength=buckets + 1).float()
        idf = torch.log((1.0 + len(ids)) / (1.0 + df)) + 1.0
        idf[df < min_df] = 0.0
        idf[0] = 0.0
        for kind, (lo, hi) in enumerate(self.bounds):
            if KINDS[kind].removeprefix("n") not in VIEWS[view]:  # nw: the name's w
                idf[lo + 1 : hi + 1] = 0.0
        weighed = torch.nonzero(idf > 0).squeeze(1)
        row_of = torch.zeros(buckets + 1, dtype=torch.long)
        row_of[weighed] = torch.arange(1, len(weighed) + 1)
        self._new_table(len(weighed), self.embedding.embedding_dim)
        self.weights[1:] = idf[weighed]
        self.row_of = row_of

    def forward(self, ids: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        rows = ids if self.row_of is None else self.row_of[ids]
        # (N, S); padding weighs 0 through its idf (its count, 0, is clamped to keep log finite)
        weights = self.weights[rows] * (1.0 + torch.log(counts.clamp(min=1).float()))
        # Each n-gram's weight in the column of its kind, (N, S, K): one batched product sums
        # every kind at once, instead of a masked pass over (N, S, dim) per kind.
        above = [(ids > lo).long() for lo, _ in self.bounds[1:]]
        kind = sum(above[1:], above[0])
        kinds = torch.arange(len(self.bounds), device=ids.device)
        by_kind = (kind.unsqueeze(2) == kinds).float() * weights.unsqueeze(2)
        sums = by_kind.transpose(1, 2) @ self.embedding(rows)  # (N, K, dim)
        norms = by_kind.pow(2).sum(dim=1).sqrt().clamp(min=1e-6)  # (N, K)
        scale = 1.0 / norms
        if self.training and self.name_dropout > 0 and len(self.bounds) > 2:
            # the name's kinds (the last two), dropped together
            keep = torch.rand(len(ids), 1, device=ids.device) >= self.name_dropout
            scale = torch.cat([scale[:, :2], scale[:, 2:] * keep], dim=1)
        embedding: torch.Tensor = (sums * scale.unsqueeze(2)).sum(dim=1)
        return embedding
