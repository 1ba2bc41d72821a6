import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from fbmr.core.ngrams import NgramHashing, kind_bounds, stable_hash
from fbmr.core.text import PAD_ID, UNK_ID, Tokenizer, tokenize
from fbmr.core.wordpiece import WordPiece


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
    tokenizer = Tokenizer(["sofa", "grey", "table"], max_words=4)
    ids = tokenizer.encode("Grey sofa, velvet")
    assert ids.dtype == np.int64
    assert ids.tolist() == [tokenizer.token_id("grey"), tokenizer.token_id("sofa"), UNK_ID, PAD_ID]
    assert tokenizer.encode("table table table table table").tolist() == [4] * 4
    assert tokenizer.decode(ids) == ["grey", "sofa", "<unk>"]


def test_known_share_says_how_much_of_a_text_the_vocabulary_knows():
    tokenizer = Tokenizer(["sofa", "grey", "table"], max_words=4)
    assert tokenizer.known_share("Grey sofa, velvet") == pytest.approx(2 / 3)
    assert tokenizer.known_share("\U0001f6cb\ufe0f \U0001f525") == 0.0  # emoji only: no words
    assert tokenizer.known_share("Диван серый") == 0.0  # words, none seen in training
    assert tokenizer.known_share("grey table") == 1.0


def test_encode_batch_shape():
    tokenizer = Tokenizer(["a"], max_words=6)
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
        Tokenizer(["a"], max_words=0)


def test_save_load_round_trip(tmp_path):
    tokenizer = Tokenizer(["sofa", "grey"], max_words=8)
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.words == tokenizer.words and loaded.max_length == 8
    np.testing.assert_array_equal(loaded.encode("grey sofa"), tokenizer.encode("grey sofa"))


def test_stable_hash_is_crc32_of_utf8():
    # CRC-32's published check value, and values computed with other tools (e.g. `crc32` of the
    # same bytes in zlib's C library or in a shell).
    assert stable_hash("123456789") == 0xCBF43926
    assert stable_hash("hello") == 0x3610A686
    assert stable_hash("caf\u00e9") == zlib.crc32(b"caf\xc3\xa9")


NGRAMS = NgramHashing(buckets=1000, slots=16, word_ngrams=2, char_min=2, char_max=3)


def test_ngram_ids_and_counts_follow_the_words_in_one_fixed_length_array():
    tokenizer = Tokenizer(["sofa", "grey"], max_words=4, ngrams=NGRAMS)
    assert tokenizer.max_length == 4 + 2 * 16
    ids = tokenizer.encode("Grey sofa")
    assert ids.dtype == np.int64 and ids.shape == (36,)
    assert ids[:4].tolist() == [tokenizer.token_id("grey"), tokenizer.token_id("sofa"), 0, 0]
    words = ["w grey", "w sofa", "w grey sofa"]
    chars = [
        "c <g", "c gr", "c re", "c ey", "c y>", "c <gr", "c gre", "c rey", "c ey>",
        "c <s", "c so", "c of", "c fa", "c a>", "c <so", "c sof", "c ofa", "c fa>",
    ]  # fmt: skip
    # Word n-grams hash into ids 1..500, character n-grams into 501..1000.
    expected = {f: 1 + stable_hash(f) % 500 for f in words}
    expected |= {f: 501 + stable_hash(f) % 500 for f in chars}
    order = ["w grey", *chars[:9], "w sofa", *chars[9:], "w grey sofa"]
    first = list(dict.fromkeys(expected[f] for f in order))[:16]
    assert ids[4:20].tolist() == first
    assert all(1 <= expected[f] <= 500 for f in words)
    assert all(501 <= expected[f] <= 1000 for f in chars)
    # Each distinct n-gram once, with its count beside it; padding fills the rest.
    repeated = tokenizer.encode("sofa sofa sofa")
    present = repeated[4:20] > 0
    assert present.sum() == 11 and len(set(repeated[4:20][present].tolist())) == 11
    # "w sofa" and its 9 character n-grams three times, "w sofa sofa" twice
    assert repeated[20:][present].tolist() == [3] * 10 + [2]
    assert (repeated[20:][~present] == 0).all()
    assert tokenizer.decode(ids) == ["grey", "sofa"]


def test_ngram_ids_are_the_same_in_another_process_with_another_hash_seed():
    tokenizer = Tokenizer(["sofa"], max_words=4, ngrams=NGRAMS)
    text = "Velvet corner sofa, grey \u2014 caf\u00e9 table"
    script = (
        "import sys; from fbmr.core.ngrams import NgramHashing; "
        "from fbmr.core.text import Tokenizer; "
        "t = Tokenizer(['sofa'], 4, NgramHashing(buckets=1000, slots=16, char_max=3)); "
        "print(t.encode(sys.argv[1]).tolist())"
    )
    for seed in ("1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", script, text],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == str(tokenizer.encode(text).tolist())


def test_tokenizer_with_ngrams_round_trips_and_words_only_files_still_load(tmp_path):
    tokenizer = Tokenizer(["sofa", "grey"], max_words=8, ngrams=NGRAMS)
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.ngrams == NGRAMS and loaded.max_length == 8 + 2 * 16
    np.testing.assert_array_equal(loaded.encode("grey sofas"), tokenizer.encode("grey sofas"))

    words_only = {"format": "fbmr.tokenizer/1", "max_length": 6, "words": ["sofa"]}
    (tmp_path / "v1.json").write_text(json.dumps(words_only))
    old = Tokenizer.load(tmp_path / "v1.json")
    assert old.ngrams is None and old.max_length == old.max_words == 6
    assert old.encode("sofa chair").tolist() == [2, 1, 0, 0, 0, 0]

    (tmp_path / "v9.json").write_text(json.dumps({**words_only, "format": "fbmr.tokenizer/9"}))
    with pytest.raises(ValueError, match=r"fbmr\.tokenizer/9"):
        Tokenizer.load(tmp_path / "v9.json")


def test_ngram_slots_cap_long_texts():
    tokenizer = Tokenizer([], max_words=2, ngrams=NgramHashing(buckets=1 << 20, slots=5))
    ids = tokenizer.encode("a very long listing text with many different words")
    assert (ids[2:] > 0).all() and ids.shape == (12,)


def test_the_names_ngrams_are_kinds_of_their_own():
    spec = NgramHashing(buckets=1000, slots=64, word_ngrams=2, char_min=2, char_max=3,
                        name_ngrams=True)  # fmt: skip
    tokenizer = Tokenizer(["sofa", "grey"], max_words=4, ngrams=spec)
    marked, plain = tokenizer.encode("Grey sofa | a sofa"), tokenizer.encode("Grey sofa a sofa")
    # The mark is no word: the word ids, and the text's own n-grams, are the same.
    assert marked[:4].tolist() == plain[:4].tolist()
    text_ids = {int(i): int(c) for i, c in zip(plain[4:68], plain[68:], strict=True) if i}
    name_features = [f for w in ("grey", "sofa") for f in spec.word_features(w, "n")]
    name_ids = {spec.bucket(f) for f in [*name_features, "nw grey sofa"]}
    got = {int(i): int(c) for i, c in zip(marked[4:68], marked[68:], strict=True) if i}
    assert got == text_ids | dict.fromkeys(name_ids, 1)  # each of the name's n-grams once
    assert got[spec.bucket("w sofa")] == 2  # the text's "sofa": twice
    # Four equal id ranges: the text's words, its characters, the name's words, its characters.
    assert kind_bounds(1000, 4) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert all(1 <= i <= 500 for i in text_ids) and all(501 <= i <= 1000 for i in name_ids)
    assert spec.bucket("nw sofa") <= 750 < spec.bucket("nc <so")
    # A text without the mark has no name.
    assert tokenizer.encode("Grey sofa a sofa").tolist() == plain.tolist()


def test_format_2_files_read_without_the_names_ngrams(tmp_path):
    spec = NgramHashing(buckets=1000, slots=16, char_max=3, name_ngrams=True)
    Tokenizer(["sofa"], 4, spec).save(tmp_path / "tokenizer.json")
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["format"] == "fbmr.tokenizer/4" and saved["wordpiece"] is None
    assert Tokenizer.load(tmp_path / "tokenizer.json").ngrams == spec
    del saved["ngrams"]["name_ngrams"]
    (tmp_path / "v2.json").write_text(json.dumps({**saved, "format": "fbmr.tokenizer/2"}))
    old = Tokenizer.load(tmp_path / "v2.json")
    assert old.ngrams is not None and not old.ngrams.name_ngrams
    # Format 2's ids: words in 1..500, characters in 501..1000, the mark read as no name.
    assert old.encode("Sofa | sofa").tolist() == old.encode("Sofa sofa").tolist()
    assert old.ngrams.bucket("w sofa") == 1 + stable_hash("w sofa") % 500


def test_format_3_files_read_without_wordpiece_ids(tmp_path):
    Tokenizer(["sofa", "grey"], max_words=4, ngrams=NGRAMS).save(tmp_path / "tokenizer.json")
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    del saved["wordpiece"]
    (tmp_path / "v3.json").write_text(json.dumps({**saved, "format": "fbmr.tokenizer/3"}))
    old = Tokenizer.load(tmp_path / "v3.json")
    assert old.wordpiece is None and old.max_length == 4 + 2 * 16
    expected = Tokenizer(["sofa", "grey"], max_words=4, ngrams=NGRAMS).encode("grey sofa")
    assert old.encode("grey sofa").tolist() == expected.tolist()


def test_wordpiece_ids_end_the_array_and_round_trip(tmp_path):
    pieces = WordPiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "grey", "sofa", "##s", "|"], length=6)
    tokenizer = Tokenizer(["sofa", "grey"], max_words=4, ngrams=NGRAMS, wordpiece=pieces)
    assert tokenizer.max_length == 4 + 2 * 16 + 6
    ids = tokenizer.encode("Grey sofas | sofa")
    assert ids[-6:].tolist() == [2, 4, 5, 6, 7, 3]  # [CLS] grey sofa ##s | [SEP], cut to 6
    without = Tokenizer(["sofa", "grey"], max_words=4, ngrams=NGRAMS).encode("Grey sofas | sofa")
    assert ids[:-6].tolist() == without.tolist()  # the parts before are the same
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.wordpiece == pieces and loaded.max_length == tokenizer.max_length
    np.testing.assert_array_equal(loaded.encode("grey sofa"), tokenizer.encode("grey sofa"))
