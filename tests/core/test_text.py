import numpy as np
import pytest

from fbmr.core.text import PAD_ID, UNK_ID, Tokenizer, tokenize


def test_tokenize_splits_glued_words_and_digits():
    assert tokenize("Easy clean dishwasherServes up to 4 person") == [
        "easy", "clean", "dishwasher", "serves", "up", "to", "4", "person",
    ]  # fmt: skip
    assert tokenize("25 February 2022Size 45x45cm") == [
        "25", "february", "2022", "size", "45", "x", "45", "cm",
    ]  # fmt: skip
    assert tokenize("Morphy Richard\u2019s caf\u00e9") == ["morphy", "richard", "s", "cafe"]
    assert tokenize("") == []


def test_encode_pads_truncates_and_maps_unknown_words():
    tokenizer = Tokenizer(["sofa", "grey", "table"], max_length=4)
    ids = tokenizer.encode("Grey sofa, velvet")
    assert ids.dtype == np.int64
    assert ids.tolist() == [tokenizer.token_id("grey"), tokenizer.token_id("sofa"), UNK_ID, PAD_ID]
    assert tokenizer.encode("table table table table table").tolist() == [4] * 4
    assert tokenizer.decode(ids) == ["grey", "sofa", "<unk>"]


def test_encode_batch_shape():
    tokenizer = Tokenizer(["a"], max_length=6)
    assert tokenizer.encode_batch(["a a", "b", ""]).shape == (3, 6)
    assert tokenizer.encode_batch([]).shape == (0, 6)


def test_from_corpus_orders_by_frequency_and_respects_min_count():
    tokenizer = Tokenizer.from_corpus(["chair chair table", "chair lamp table"], min_count=2)
    assert tokenizer.words == ["chair", "table"]
    assert tokenizer.vocab_size == 4


def test_vocabulary_is_validated():
    with pytest.raises(ValueError):
        Tokenizer(["two words"])
    with pytest.raises(ValueError):
        Tokenizer(["a", "a"])
    with pytest.raises(ValueError):
        Tokenizer(["<pad>"])
    with pytest.raises(ValueError):
        Tokenizer(["a"], max_length=0)


def test_save_load_round_trip(tmp_path):
    tokenizer = Tokenizer(["sofa", "grey"], max_length=8)
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.words == tokenizer.words and loaded.max_length == 8
    np.testing.assert_array_equal(loaded.encode("grey sofa"), tokenizer.encode("grey sofa"))
