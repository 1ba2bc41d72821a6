"""BERT's WordPiece rules (fbmr.core.wordpiece); tests/training/test_sentence.py holds them to the
reference implementation on real listings."""

import numpy as np
import pytest

from fbmr.core.wordpiece import WordPiece, basic_tokens

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "sofa", "##bed", "##s", "cafe", "£", "##5", ",", "000"]


def test_basic_tokens_lowercase_strip_accents_and_split_punctuation():
    assert basic_tokens("Café SOFA-bed, £5,000!\x07\tnew") == [
        "cafe",
        "sofa",
        "-",
        "bed",
        ",",
        "£5",
        ",",
        "000",
        "!",
        "new",
    ]  # fmt: skip: "£" is a currency symbol, no punctuation, so it stays with its digits
    assert basic_tokens("東京 sofa") == ["東", "京", "sofa"]


def test_ascii_text_takes_the_short_path_to_the_same_tokens():
    """ASCII text (with pound signs) skips the per-character rules; each ASCII character, alone,
    between words and in random strings with pound signs, must come out as the general path has
    it (an accent moves the text to that path, so the pair checks both)."""
    texts = [chr(i) for i in range(128)] + [f"Ab{chr(i)}cD £5 e" for i in range(128)]
    rng = np.random.default_rng(0)
    alphabet = [chr(i) for i in range(128)] + ["£"] * 8
    texts += ["".join(rng.choice(alphabet, 40)) for _ in range(500)]
    for text in texts:
        # the same text with one accented letter goes the general way: its tokens, that
        # letter's word aside, are the short path's
        general = basic_tokens(text + " é")
        assert general[-1] == "e" and basic_tokens(text) == general[:-1], repr(text)


def test_words_split_into_the_longest_pieces_or_unknown():
    pieces = WordPiece(VOCAB, length=16)
    assert pieces.pieces("sofabeds") == (4, 5, 6)
    assert pieces.pieces("sofax") == (1,)  # no split reaches the end: the whole word unknown
    assert pieces.pieces("s" * 101) == (1,)
    ids = pieces.encode("Sofabed £5,000")
    assert ids.tolist() == [2, 4, 5, 8, 9, 10, 11, 3] + [0] * 8
    assert ids.dtype == np.int64


def test_special_tokens_in_the_text_are_read_as_themselves():
    pieces = WordPiece(VOCAB, length=16)
    assert pieces.encode("sofa[SEP]sofa [UNK]").tolist()[:6] == [2, 4, 3, 4, 1, 3]


def test_long_texts_are_cut_and_still_end_in_sep():
    ids = WordPiece(VOCAB, length=4).encode("sofa sofa sofa sofa")
    assert ids.tolist() == [2, 4, 4, 3]


def test_a_vocabulary_needs_the_special_pieces_with_padding_first():
    with pytest.raises(ValueError, match="SEP"):
        WordPiece(["[PAD]", "[UNK]", "[CLS]"])
    with pytest.raises(ValueError, match="id 0"):
        WordPiece(["[UNK]", "[PAD]", "[CLS]", "[SEP]"])
