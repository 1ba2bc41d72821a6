"""The text model: n-gram bags, optionally beside a CNN over word2vec, and optionally an
ensemble of such encoders with a pretrained sentence encoder among them (`EnsembleHead` pools
the members' answers)."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from fbmr.training.models._head import ClassifierHead
from fbmr.training.models._ngrams import NgramBag
from fbmr.training.sentence import SentenceMember, SentenceSpec


class TextEncoder(nn.Module):
    """Token ids (N, L) -> text embedding (N, embedding_dim).

    The ids are laid out as fbmr.core.text's tokeniser writes them: `max_words` word ids, then
    hashed n-gram ids and their counts (`split` cuts them apart). Two branches read them, each
    optional: convolutions of several widths over word vectors, max-pooled over the text (the
    CNN; `filters` 0 turns it off), and a bag of hashed word and character n-grams
    (`ngram_buckets` 0 turns it off). Their outputs are concatenated and projected to the
    embedding, so the two are trained as one model.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        embedding_dim: int = 256,
        filters: int = 128,
        widths: tuple[int, ...] = (2, 3, 4, 5),
        dropout: float = 0.3,
        max_words: int | None = None,
        ngram_buckets: int = 0,
        ngram_dim: int = 0,
        ngram_kinds: int = 2,
        name_dropout: float = 0.0,
        ngram_rows: int | None = None,
    ) -> None:
        super().__init__()
        if not filters and not ngram_buckets:
            raise ValueError("a text encoder needs the CNN (filters) or the n-gram bag, or both")
        self.max_words = max_words
        self.cnn = bool(filters)
        if self.cnn:
            self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
            self.convs = nn.ModuleList(
                nn.Conv1d(word_dim, filters, w, padding=w - 1) for w in widths
            )
        self.bag = (
            NgramBag(ngram_buckets, ngram_dim, ngram_kinds, name_dropout, ngram_rows)
            if ngram_buckets
            else None
        )
        self.dropout = nn.Dropout(dropout)
        features = (filters * len(widths) if self.cnn else 0) + (ngram_dim if self.bag else 0)
        self.projection = nn.Linear(features, embedding_dim)

    def split(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(word ids, n-gram ids, n-gram counts) of token ids (N, L); the last two are empty
        (N, 0) for ids without n-grams."""
        end = self.max_words if self.max_words is not None else token_ids.shape[1]
        if self.bag is None:
            return token_ids[:, :end], token_ids[:, :0], token_ids[:, :0]
        ngrams, counts = token_ids[:, end:].chunk(2, dim=1)
        return token_ids[:, :end], ngrams, counts

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        word_ids, ngrams, counts = self.split(token_ids)
        parts: list[torch.Tensor] = []
        if self.cnn:
            words = self.words(word_ids).transpose(1, 2)  # (N, word_dim, L)
            parts.extend(torch.relu(conv(words)).amax(dim=2) for conv in self.convs)
        if self.bag is not None:
            parts.append(self.bag(ngrams, counts))
        embedding: torch.Tensor = self.projection(self.dropout(torch.cat(parts, dim=1)))
        return embedding


class TextEnsembleEncoder(nn.Module):
    """`members` text encoders of the same shape side by side, each with its own n-gram table
    (of its own size when members read different views), projection and random start, and
    optionally a pretrained sentence encoder (`fbmr.training.sentence.SentenceMember`, reading
    the WordPiece ids that end the token ids) as one more member: token ids (N, L) -> their
    embeddings concatenated (N, all members x embedding_dim). With `EnsembleHead` over it, an
    ensemble trained as one model.

    `forward`'s `lower` is the sentence member's frozen layers' output for these ids, when the
    caller has it (the text stage caches it: those layers never change); without it, they run."""

    def __init__(
        self,
        members: int,
        ngram_rows: int | list[int] | None = None,
        sentence: SentenceMember | None = None,
        **encoder_args: Any,  # TextEncoder's
    ) -> None:
        super().__init__()
        # members reading different views (VIEWS) keep tables of different sizes
        rows = ngram_rows if isinstance(ngram_rows, list) else [ngram_rows] * members
        if len(rows) != members:
            raise ValueError(f"{len(rows)} n-gram table sizes for {members} members")
        self.members = nn.ModuleList(TextEncoder(ngram_rows=r, **encoder_args) for r in rows)
        self.sentence = sentence
        self.pieces = sentence.length if sentence is not None else 0

    def cut(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the n-gram members' ids, the WordPiece ids) of token ids (N, L)."""
        end = token_ids.shape[1] - self.pieces
        return token_ids[:, :end], token_ids[:, end:]

    @property
    def encoders(self) -> list[TextEncoder]:
        """The n-gram members."""
        return [cast(TextEncoder, member) for member in self.members]

    def split(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encoders[0].split(self.cut(token_ids)[0])

    def forward(self, token_ids: torch.Tensor, lower: torch.Tensor | None = None) -> torch.Tensor:
        ids, pieces = self.cut(token_ids)
        parts = [member(ids) for member in self.members]
        if self.sentence is not None:
            parts.append(self.sentence(pieces, lower))
        return torch.cat(parts, dim=1)


class EnsembleHead(nn.Module):
    """Concatenated member embeddings (N, members x dim) -> logits: a classifier head per member,
    and as the ensemble's logits the mean of the members' log-probabilities (their softmax is the
    members' normalised geometric mean). `member_logits` gives each member's own logits, which
    training fits each to its own loss, so the members stay different models."""

    def __init__(self, embedding_dim: int, members: int, num_classes: int) -> None:
        super().__init__()
        if embedding_dim % members:
            raise ValueError(f"an embedding of {embedding_dim} does not split into {members}")
        self.heads = nn.ModuleList(
            ClassifierHead(embedding_dim // members, num_classes) for _ in range(members)
        )

    def member_logits(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        parts = embedding.chunk(len(self.heads), dim=1)
        return [head(part) for head, part in zip(self.heads, parts, strict=True)]

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(embedding)
        return torch.stack([torch.log_softmax(m, dim=1) for m in logits]).mean(dim=0)


class TextModel(nn.Module):
    """Token ids -> (text embedding, logits). With `members` > 1, or a `sentence` encoder (shape
    and frozen layers, `fbmr.training.sentence.SentenceSpec`) beside them, an ensemble of that
    many text encoders, the sentence member and their heads (`TextEnsembleEncoder`,
    `EnsembleHead`): the embedding is theirs concatenated, `embedding_dim` wide in all."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int = 256,
        members: int = 1,
        sentence: SentenceSpec | None = None,
        **encoder_args: Any,  # TextEncoder's
    ) -> None:
        super().__init__()
        self.encoder: TextEncoder | TextEnsembleEncoder
        self.head: ClassifierHead | EnsembleHead
        if members < 1:
            raise ValueError(f"a text model needs at least one n-gram or CNN encoder: {members}")
        heads = members + (sentence is not None)
        if heads == 1:
            self.encoder = TextEncoder(embedding_dim=embedding_dim, **encoder_args)
            self.head = ClassifierHead(embedding_dim, num_classes)
        else:
            self.head = EnsembleHead(embedding_dim, heads, num_classes)
            dim = embedding_dim // heads
            self.encoder = TextEnsembleEncoder(
                members,
                sentence=sentence.build(dim) if sentence is not None else None,
                embedding_dim=dim,
                **encoder_args,
            )

    @property
    def sentence(self) -> SentenceMember | None:
        """The pretrained sentence member, if the ensemble has one."""
        return self.encoder.sentence if isinstance(self.encoder, TextEnsembleEncoder) else None

    @property
    def encoders(self) -> list[TextEncoder]:
        """The text encoders: the ensemble's members, or the one."""
        if isinstance(self.encoder, TextEnsembleEncoder):
            return self.encoder.encoders
        return [self.encoder]

    def member_logits(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own logits (the one model's logits when it is not an ensemble)."""
        if isinstance(self.head, EnsembleHead):
            return self.head.member_logits(embedding)
        return [self.head(embedding)]

    def forward(
        self, token_ids: torch.Tensor, lower: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if lower is None:
            embedding = self.encoder(token_ids)
        else:  # the sentence member's cached frozen layers (the text stage's training sets)
            embedding = cast(TextEnsembleEncoder, self.encoder)(token_ids, lower)
        return embedding, self.head(embedding)
