"""The models: the image model (a pretrained trunk from fbmr.training.trunks, a projection and a
head), the text model (a bag of hashed n-grams, optionally
beside a CNN over word2vec, and optionally an ensemble of such encoders with a pretrained
sentence encoder among them), and the fusion head over both.

Each classifier is an encoder (input -> embedding) followed by a head (embedding -> logits), so
export can serve the encoders and the heads as separate ONNX models chained in Triton, and the
similar-listing index can use the embeddings.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from fbmr.core.text import KINDS, kind_bounds
from fbmr.training.sentence import SentenceMember, SentenceSpec
from fbmr.training.trunks import Backbone, build_trunk, trainable_stages


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


class ImageEncoder(nn.Module):
    """Photo (N, 3, H, W) -> image embedding (N, embedding_dim): a trunk of named stages
    (fbmr.training.trunks), then a linear projection."""

    def __init__(self, trunk: nn.Sequential, features: int, embedding_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.projection = nn.Linear(features, embedding_dim)
        self.frozen_stages: tuple[str, ...] = ()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding: torch.Tensor = self.projection(self.trunk(images))
        return embedding

    def cut(self, first_trainable: str) -> int:
        """The index in the trunk of stage `first_trainable` ("head": past the whole trunk)."""
        names = list(self.trunk._modules)
        if first_trainable == "head":
            return len(names)
        if first_trainable not in trainable_stages(self.trunk):
            raise ValueError(
                f"unknown stage {first_trainable!r}; one of {trainable_stages(self.trunk)} or head"
            )
        return names.index(first_trainable)

    def forward_from(self, features: torch.Tensor, first_trainable: str) -> torch.Tensor:
        """The embedding from the output of the stages before `first_trainable` (what the
        image stage caches), through the rest of the trunk and the projection."""
        embedding: torch.Tensor = self.projection(self.trunk[self.cut(first_trainable) :](features))
        return embedding

    def freeze_until(self, first_trainable: str) -> None:
        """Freeze the trunk's stages before `first_trainable` (a stage name, or "head" to freeze
        the whole trunk)."""
        frozen = list(self.trunk._modules)[: self.cut(first_trainable)]
        for name in frozen:
            for parameter in getattr(self.trunk, name).parameters():
                parameter.requires_grad_(False)
        self.frozen_stages = tuple(frozen)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        # Frozen stages keep their batch-norm statistics: updating them would change the features
        # the trained layers learn from.
        for name in self.frozen_stages:
            getattr(self.trunk, name).eval()
        return self


class ImageModel(nn.Module):
    """Photo -> (image embedding, logits)."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        embedding_dim: int = 256,
        weights: str | None = "imagenet",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        trunk, features, self.weights_source = build_trunk(backbone, weights)
        self.encoder = ImageEncoder(trunk, features, embedding_dim)
        self.head = ClassifierHead(embedding_dim, num_classes, dropout)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(images)
        return embedding, self.head(embedding)


# What an ensemble member's n-gram bag reads, by kind (fbmr.core.text.KINDS, the name's kinds
# with their text's): members that read different views are more different models than members
# that differ only in their random start (measured in docs/results.md).
VIEWS: dict[str, tuple[str, ...]] = {"all": ("w", "c"), "words": ("w",), "chars": ("c",)}


class NgramBag(nn.Module):
    """Hashed n-gram ids (N, S) -> a bag-of-n-grams embedding (N, dim).

    Each distinct n-gram of a text is weighted by its sublinear term frequency in the text,
    1 + ln(count), times its inverse document frequency on the training texts (`weights`, a
    fixed buffer that `set_idf` fills; 0 for n-grams seen in fewer than `min_df` training texts,
    as TF-IDF's min_df drops them). Each kind of n-gram (word, character, and with `kinds` 4 the
    name's word and character n-grams, in the id ranges `fbmr.core.text.kind_bounds` gives) is
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


class FusionHead(nn.Module):
    """(image embedding, text embedding) -> (combined embedding, logits).

    The logits stack the calibrated logits of the image and text models' own heads (copies,
    frozen) with those of a head over the combined embedding:

        logits = t * text_head(text) + i * image_head(image) + c * combined_head(combined)

    with t, i and c learned scalars that start at 1, 0 and 0, so the fusion model starts as
    exactly the text model and moves away from it only as far as the training data rewards: it
    leans on the text where the image side carries nothing, and gains where it does. During
    training the image embedding is dropped (zeroed) with probability `modality_dropout`, so the
    combined head cannot come to depend on it. The combined embedding, which similar-listing
    search indexes, is trained through its own head as well (`combined_logits`), so it stays a
    category-aware embedding whatever the weights settle to.

    Without `image_head` and `text_head` (stacking turned off), the logits are the combined
    head's alone.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        embedding_dim: int = 256,
        dropout: float = 0.3,
        image_head: nn.Module | None = None,
        text_head: nn.Module | None = None,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(image_dim + text_dim, embedding_dim)
        )
        self.head = ClassifierHead(embedding_dim, num_classes, dropout)
        self.modality_dropout = modality_dropout
        self.image_head: nn.Module | None = None
        self.text_head: nn.Module | None = None
        if image_head is not None and text_head is not None:
            self.image_head, self.text_head = image_head, text_head
            for frozen in (image_head, text_head):
                frozen.requires_grad_(False)
            # weights of the text, image and combined logits
            self.weights = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))

    def combined(self, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        if self.training and self.modality_dropout > 0:
            keep = torch.rand(len(image_embedding), 1, device=image_embedding.device)
            image_embedding = image_embedding * (keep >= self.modality_dropout)
        combined: torch.Tensor = self.mlp(torch.cat([image_embedding, text_embedding], dim=1))
        return combined

    def forward(
        self, image_embedding: torch.Tensor, text_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined = self.combined(image_embedding, text_embedding)
        logits = self.head(combined)
        if self.image_head is not None and self.text_head is not None:
            t, i, c = self.weights
            logits = (
                t * self.text_head(text_embedding)
                + i * self.image_head(image_embedding)
                + c * logits
            )
        return combined, logits

    def train(self, mode: bool = True) -> FusionHead:
        super().train(mode)
        # the copied heads keep their dropout off: they are frozen
        if self.image_head is not None and self.text_head is not None:
            self.image_head.eval()
            self.text_head.eval()
        return self

    def combined_logits(self, combined: torch.Tensor) -> torch.Tensor:
        """The combined head's own logits (its auxiliary training signal)."""
        logits: torch.Tensor = self.head(combined)
        return logits


class FusionModel(nn.Module):
    """(image embedding, token ids) -> (combined embedding, logits): the fusion head with the
    text encoder it was trained with (frozen by default, fine-tuned with --unfreeze-text), so
    export serves the very text encoder the head expects."""

    def __init__(self, text_encoder: TextEncoder | TextEnsembleEncoder, head: FusionHead) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.head = head

    def forward(
        self, image_embedding: torch.Tensor, token_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined, logits = self.head(image_embedding, self.text_encoder(token_ids))
        return combined, logits
