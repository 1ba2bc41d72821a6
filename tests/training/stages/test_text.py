import shutil

import numpy as np
import pytest
import torch

from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.models import TextModel
from fbmr.training.stages.text import member_views, start_members, train_text
from tests.helpers import TINY_TRAINING


def test_members_read_the_views_in_turn():
    assert member_views(TrainConfig().text_views, 3) == ["all", "all", "all"]
    assert member_views("all,words,chars", 3) == ["all", "words", "chars"]
    assert member_views("all, words", 3) == ["all", "words", "all"]
    assert member_views("chars", 1) == ["chars"]
    for bad in ("all,bigrams", " , "):
        with pytest.raises(ValueError, match="text views must be some of"):
            member_views(bad, 2)


def test_views_other_than_all_need_the_idf_weighted_bag():
    assert member_views("all", 2, weighed=False) == ["all", "all"]
    with pytest.raises(ValueError, match="need the n-gram bag with IDF"):
        member_views("all,words", 2, weighed=False)


def test_every_member_starts_from_word2vec_and_weighs_its_own_view():
    torch.manual_seed(0)
    shape = dict(vocab_size=50, word_dim=8, filters=4, widths=(2, 3), max_words=6,
                 ngram_buckets=100, ngram_dim=5, ngram_kinds=4)  # fmt: skip
    model = TextModel(13, embedding_dim=24, members=3, **shape)
    words = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    # six word ids, then n-gram ids (1..25 words, 26..50 characters, 51..100 the name's) and
    # their counts; every n-gram is in both listings, so each has an IDF weight
    listing = [*[4, 9, 2, 0, 0, 0], *[3, 30, 60, 80], *[1, 1, 1, 1]]
    rows = start_members(model, ["all", "words", "chars"], torch.tensor([listing] * 2), words)
    for encoder in model.encoders:
        torch.testing.assert_close(encoder.words.weight, torch.from_numpy(words))
    # each table keeps its view's weighed n-grams: all four, the two words, the two characters
    assert rows == [bag.rows for bag in (e.bag for e in model.encoders)] == [4, 2, 2]
    # without IDF weights, no table is pruned and word2vec still reaches every member
    plain = TextModel(13, embedding_dim=24, members=2, **shape)
    assert start_members(plain, ["all", "all"], None, words) == []
    assert all(torch.equal(e.words.weight, torch.from_numpy(words)) for e in plain.encoders)


def test_a_tokeniser_and_a_text_model_that_disagree_on_wordpiece_ids_are_refused(
    tiny_run, demo_prepared, tmp_path
):
    # The n-gram members find their ids by cutting the WordPiece ids off the array's end, which
    # only the sentence member reads: the tiny run's tokeniser writes them.
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "word2vec", run / "word2vec")
    shutil.copy(tiny_run / "label_map.json", run / "label_map.json")
    settings = {**TINY_TRAINING, "data": str(demo_prepared)}
    data = PreparedDataset(demo_prepared)
    for changed in ({"text_sentence": "none"}, {"text_sentence_length": 16}):
        with pytest.raises(ValueError, match="WordPiece ids"):
            train_text(TrainConfig(**{**settings, **changed}), data, run, torch.device("cpu"))
