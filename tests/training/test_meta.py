"""Checkpoint metadata (fbmr.training.meta): round trips, and refusals of other versions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fbmr.core.image import ImageSpec
from fbmr.core.schema import SchemaVersionError
from fbmr.training.config import ImageMode
from fbmr.training.meta import FusionMeta, ImageMeta, TextMeta
from fbmr.training.sentence import BertShape, SentenceSpec
from fbmr.training.trunks import Backbone

IMAGE = ImageMeta(
    backbone=Backbone.resnet18,
    embedding_dim=256,
    image_spec=ImageSpec.for_image_size(64),
    weights_source="none",
    mode=ImageMode.cached,
    trainable_from="layer4",
    batch_norm_recalibrated_on=512,
)
TEXT = TextMeta(
    embedding_dim=768,
    members=2,
    vocab_size=1000,
    word_dim=32,
    filters=32,
    widths=(2, 3),
    dropout=0.3,
    max_length=48,
    max_words=40,
    ngram_buckets=1 << 14,
    ngram_dim=32,
    ngram_kinds=3,
    name_dropout=0.1,
    views=("all", "words"),
    ngram_rows=(900, 300),
)
FUSION = FusionMeta(
    embedding_dim=256,
    image_dim=256,
    text_dim=768,
    unfreeze_text=False,
    text=TEXT,
    image=IMAGE,
    stacked=True,
    modality_dropout=0.5,
)


def _sentence() -> SentenceSpec:
    shape = BertShape(hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    return SentenceSpec(shape, frozen=1, length=32)


@pytest.mark.parametrize(
    "meta",
    [IMAGE, replace(IMAGE, batch_norm_recalibrated_on=None), TEXT, FUSION],
    ids=["image", "image-pretrained", "text", "fusion"],
)
def test_each_meta_round_trips(meta):
    written = meta.to_dict()
    assert written["schema_version"] == 1
    assert type(meta).from_dict(written) == meta


def test_text_meta_with_a_sentence_member_and_no_pruning_round_trips():
    meta = replace(TEXT, ngram_rows=None, sentence=_sentence())
    assert TextMeta.from_dict(meta.to_dict()) == meta


def test_unversioned_meta_is_refused_with_what_to_rerun():
    old = {k: v for k, v in TEXT.to_dict().items() if k != "schema_version"}
    with pytest.raises(SchemaVersionError, match=r"run/text/best.pt: the text model's meta has "
                       r"no schema version.*retrain the stage"):  # fmt: skip
        TextMeta.from_dict(old, "run/text/best.pt")


def test_a_fusion_meta_over_an_unversioned_image_meta_is_refused():
    written = FUSION.to_dict()
    image = {k: v for k, v in IMAGE.to_dict().items() if k != "schema_version"}
    with pytest.raises(SchemaVersionError, match="the image model's meta has no schema version"):
        FusionMeta.from_dict({**written, "image": image})
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        FusionMeta.from_dict({**written, "schema_version": 2})
