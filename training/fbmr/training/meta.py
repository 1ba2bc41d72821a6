"""The shape of each stage's model as its checkpoints record it (`meta`): what the later stages,
export and a resumed run rebuild the model from.

Each stage's meta is a typed spec, written into a checkpoint by `to_dict` and read back by
`from_dict` only, with a schema version (`fbmr.core.schema`): a checkpoint of another version is
refused with what to re-run, never read with guessed defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from fbmr.core.image import ImageSpec
from fbmr.core.schema import checked, stamped
from fbmr.training.config import ImageMode
from fbmr.training.sentence import SentenceSpec
from fbmr.training.trunks import Backbone

RETRAIN = "retrain the stage (`fbmr train` with --force)"


@dataclass(frozen=True)
class ImageMeta:
    """The image stage's model: its trunk, embedding and the photo settings it was trained on."""

    SCHEMA_VERSION: ClassVar[int] = 1

    backbone: Backbone
    embedding_dim: int
    image_spec: ImageSpec
    weights_source: str  # the trunk's starting weights (fbmr.training.trunks)
    mode: ImageMode
    trainable_from: str  # the first trunk stage that trained; "head": none of the trunk
    # A random trunk's batch-norm statistics measured on this many photos (cached mode)
    batch_norm_recalibrated_on: int | None = None

    def to_dict(self) -> dict[str, object]:
        return stamped(
            self.SCHEMA_VERSION,
            {
                **asdict(self),
                "backbone": str(self.backbone),
                "mode": str(self.mode),
                "image_spec": self.image_spec.to_dict(),
            },
        )

    @classmethod
    def from_dict(cls, data: object, source: str = "image checkpoint") -> ImageMeta:
        d = checked(data, cls.SCHEMA_VERSION, f"{source}: the image model's meta", RETRAIN)
        recalibrated = d["batch_norm_recalibrated_on"]
        return cls(
            backbone=Backbone(d["backbone"]),
            embedding_dim=int(d["embedding_dim"]),
            image_spec=ImageSpec.from_dict(d["image_spec"]),
            weights_source=str(d["weights_source"]),
            mode=ImageMode(d["mode"]),
            trainable_from=str(d["trainable_from"]),
            batch_norm_recalibrated_on=None if recalibrated is None else int(recalibrated),
        )


@dataclass(frozen=True)
class TextMeta:
    """The text stage's model: its ensemble's members, their n-gram bags and CNNs, and the
    sentence member's shape."""

    SCHEMA_VERSION: ClassVar[int] = 1

    embedding_dim: int  # the members' embeddings concatenated, the sentence member's last
    members: int
    vocab_size: int
    word_dim: int
    filters: int
    widths: tuple[int, ...]
    dropout: float
    max_length: int
    max_words: int
    ngram_buckets: int
    ngram_dim: int
    ngram_kinds: int
    name_dropout: float
    views: tuple[str, ...]  # the view each n-gram member reads (fbmr.training.models.VIEWS)
    # Each member's pruned n-gram table size (`NgramBag.set_idf`); None: a row per id
    ngram_rows: tuple[int, ...] | None = None
    sentence: SentenceSpec | None = None

    def to_dict(self) -> dict[str, object]:
        fields = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "sentence"
        }
        return stamped(
            self.SCHEMA_VERSION,
            {
                **fields,
                "widths": list(self.widths),
                "views": list(self.views),
                "ngram_rows": None if self.ngram_rows is None else list(self.ngram_rows),
                "sentence": None if self.sentence is None else self.sentence.to_dict(),
            },
        )

    @classmethod
    def from_dict(cls, data: object, source: str = "text checkpoint") -> TextMeta:
        d = checked(data, cls.SCHEMA_VERSION, f"{source}: the text model's meta", RETRAIN)
        rows, sentence = d["ngram_rows"], d["sentence"]
        return cls(
            embedding_dim=int(d["embedding_dim"]),
            members=int(d["members"]),
            vocab_size=int(d["vocab_size"]),
            word_dim=int(d["word_dim"]),
            filters=int(d["filters"]),
            widths=tuple(int(w) for w in d["widths"]),
            dropout=float(d["dropout"]),
            max_length=int(d["max_length"]),
            max_words=int(d["max_words"]),
            ngram_buckets=int(d["ngram_buckets"]),
            ngram_dim=int(d["ngram_dim"]),
            ngram_kinds=int(d["ngram_kinds"]),
            name_dropout=float(d["name_dropout"]),
            views=tuple(str(v) for v in d["views"]),
            ngram_rows=None if rows is None else tuple(int(r) for r in rows),
            sentence=None if sentence is None else SentenceSpec.from_dict(sentence),
        )


@dataclass(frozen=True)
class FusionMeta:
    """The fusion stage's model: its head over the two embeddings, and the image and text
    models it was trained over."""

    SCHEMA_VERSION: ClassVar[int] = 1

    embedding_dim: int
    image_dim: int
    text_dim: int
    unfreeze_text: bool
    text: TextMeta  # the fusion model's text encoder (fine-tuned with --unfreeze-text)
    image: ImageMeta
    stacked: bool  # the image and text heads' logits stacked with the combined head's
    modality_dropout: float

    def to_dict(self) -> dict[str, object]:
        fields: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return stamped(
            self.SCHEMA_VERSION,
            {**fields, "text": self.text.to_dict(), "image": self.image.to_dict()},
        )

    @classmethod
    def from_dict(cls, data: object, source: str = "fusion checkpoint") -> FusionMeta:
        d = checked(data, cls.SCHEMA_VERSION, f"{source}: the fusion model's meta", RETRAIN)
        return cls(
            embedding_dim=int(d["embedding_dim"]),
            image_dim=int(d["image_dim"]),
            text_dim=int(d["text_dim"]),
            unfreeze_text=bool(d["unfreeze_text"]),
            text=TextMeta.from_dict(d["text"], source),
            image=ImageMeta.from_dict(d["image"], source),
            stacked=bool(d["stacked"]),
            modality_dropout=float(d["modality_dropout"]),
        )


# What a trained stage's checkpoints record as `meta`
StageMeta = ImageMeta | TextMeta | FusionMeta
