"""BERT's WordPiece tokeniser, in plain Python: listing text to the ids a pretrained sentence
encoder reads.

The text model can have a pretrained sentence encoder among its members (MiniLM, a 6-layer BERT
trained on a billion sentence pairs; `fbmr.training.sentence`): it brings what the marketplace's
few thousand listings cannot teach, that a "hoover" and a "vacuum cleaner" are the same thing.
Serving builds its input without torch or a Hugging Face library, so the tokenisation lives here:
the rules of BERT's uncased tokeniser (`BertTokenizer` with `do_lower_case`), which a training
test holds to the reference implementation, id for id, on real listings.

1. Basic: control characters dropped, white space folded, Chinese characters and punctuation
   split off as tokens of their own, lowercased, accents stripped (NFD, combining marks dropped).
2. WordPiece: each token as the longest vocabulary pieces from its start, the ones after the
   first marked "##" ("sofabed" -> "sofa", "##bed"); a token with no such split, or over 100
   characters, is `[UNK]`.
3. `[CLS]` pieces `[SEP]`, cut to `length` ids and padded with `[PAD]` (id 0 in BERT's
   vocabularies, which the model reads as "no token").

A special token written in the text itself ("[SEP]", "[MASK]", ...) is read as that token, as
the reference does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

CLS, SEP, PAD, UNK, MASK = "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"
_SPECIAL = re.compile(r"(\[(?:CLS|SEP|PAD|UNK|MASK)\])")
_MAX_WORD_CHARS = 100
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    # BERT counts every non-alphanumeric ASCII character as punctuation ("$", "^", "`" are
    # symbols to Unicode), and every character Unicode files under punctuation.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


# ASCII text has no accents, no Chinese and no Unicode spaces, and a pound sign is a letter to
# BERT (a currency symbol, not punctuation): such text (four listings in five) takes step 1 as a
# drop of the control characters and one regular expression, the same tokens in a twentieth of
# the time.
_SHORT_PATH = re.compile(r"[\x00-\x7f£]*")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_TOKEN = re.compile(r"[a-z0-9£]+|[^a-z0-9£\s]")


def basic_tokens(text: str) -> list[str]:
    """Step 1: the lowercased, accent-free words and punctuation marks of a text."""
    if _SHORT_PATH.fullmatch(text):
        return _ASCII_TOKEN.findall(_ASCII_CONTROL.sub("", text).lower())
    chars = []
    for char in text:
        if char in ("\x00", "\ufffd") or _is_control(char):
            continue
        if _is_whitespace(char):
            chars.append(" ")
        elif _is_cjk(char):
            chars.append(f" {char} ")
        else:
            chars.append(char)
    tokens = []
    for word in unicodedata.normalize("NFC", "".join(chars)).split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        piece = ""
        for char in word:
            if _is_punctuation(char):
                if piece:
                    tokens.append(piece)
                tokens.append(char)
                piece = ""
            else:
                piece += char
        if piece:
            tokens.append(piece)
    return tokens


@dataclass
class WordPiece:
    """A WordPiece vocabulary (the pieces in id order) and the length of the id arrays it writes.

    Saved with the text tokeniser (`fbmr.core.text.Tokenizer`), whose arrays end in these ids.
    """

    vocab: Sequence[str]
    length: int = 64
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _cache: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vocab = list(self.vocab)
        self._ids = {piece: i for i, piece in enumerate(self.vocab)}
        missing = [t for t in (CLS, SEP, PAD, UNK) if t not in self._ids]
        if missing:
            raise ValueError(f"a WordPiece vocabulary needs {missing}")
        if self._ids[PAD] != 0:
            raise ValueError(f"{PAD} must be id 0 (the model reads id 0 as no token)")
        if self.length < 2:
            raise ValueError(f"WordPiece ids need room for {CLS} and {SEP}: length {self.length}")
        self._cache = {}

    def pieces(self, word: str) -> tuple[int, ...]:
        """Step 2: the ids of one basic token's pieces."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids: list[int] = []
        start = 0
        while start < len(word) and len(word) <= _MAX_WORD_CHARS:
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else f"##{word[start:end]}"
                if piece in self._ids:
                    ids.append(self._ids[piece])
                    break
                end -= 1
            if end == start:  # no piece fits: the whole word is unknown
                ids = []
                break
            start = end
        result = tuple(ids) if ids else (self._ids[UNK],)
        if len(self._cache) < 1 << 16:  # bounded: served texts are anyone's
            self._cache[word] = result
        return result

    def encode(self, text: str) -> NDArray[np.int64]:
        """Step 3: a (length,) int64 array, `[CLS]` pieces `[SEP]` then padding."""
        ids = [self._ids[CLS]]
        for i, part in enumerate(_SPECIAL.split(text)):  # odd parts: special tokens
            if i % 2 and part in self._ids:
                ids.append(self._ids[part])
                continue
            for word in basic_tokens(part):
                ids.extend(self.pieces(word))
                if len(ids) >= self.length - 1:
                    break
            if len(ids) >= self.length - 1:
                break
        ids = [*ids[: self.length - 1], self._ids[SEP]]
        out = np.zeros(self.length, dtype=np.int64)
        out[: len(ids)] = ids
        return out

    def to_dict(self) -> dict[str, object]:
        return {"length": self.length, "vocab": list(self.vocab)}
