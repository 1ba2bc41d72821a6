"""Listing text to token ids: the tokeniser and its vocabulary artifact.

Training builds the vocabulary from the word2vec model and saves it with `Tokenizer.save`; the
facade and the client load that file, so the text model sees the same ids for the same words.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

TOKENIZER_FORMAT = "fbmr.tokenizer/1"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0
UNK_ID = 1
DEFAULT_MAX_LENGTH = 128

# Descriptions lost their line breaks upstream, gluing words ("cookingServes", "2022Size"): split
# a lowercase letter followed by a capital before lowercasing, and letters from digits by the
# token pattern itself.
_GLUED_CAPITAL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TOKEN = re.compile(r"[a-z]+|[0-9]+")


def tokenize(text: str) -> list[str]:
    """Words of a text: accents dropped, glued words split, lowercased, letter and digit runs."""
    # NFKD splits "é" into "e" plus a combining accent, which is dropped, so "café" reads "cafe".
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _GLUED_CAPITAL.sub(" ", text).lower()
    return _TOKEN.findall(text)


class Tokenizer:
    """Maps text to fixed-length token-id arrays with a fixed vocabulary.

    Id 0 is padding and id 1 stands for any word outside the vocabulary; the vocabulary's words
    follow in the order given (word2vec's, most frequent first).
    """

    def __init__(self, words: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        words = list(words)
        bad = [w for w in words if w in (PAD_TOKEN, UNK_TOKEN) or tokenize(w) != [w]]
        if bad:
            raise ValueError(f"vocabulary words must be single tokens; not usable: {bad[:5]}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.max_length = max_length
        self._tokens = [PAD_TOKEN, UNK_TOKEN, *words]
        self._ids = {w: i for i, w in enumerate(self._tokens)}

    @classmethod
    def from_corpus(
        cls, texts: Iterable[str], min_count: int = 1, max_length: int = DEFAULT_MAX_LENGTH
    ) -> Tokenizer:
        """A vocabulary of every word seen at least `min_count` times, most frequent first."""
        counts: dict[str, int] = {}
        for text in texts:
            for token in tokenize(text):
                counts[token] = counts.get(token, 0) + 1
        ranked = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(ranked, max_length)

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and unknown included (the embedding table's row count)."""
        return len(self._tokens)

    @property
    def words(self) -> list[str]:
        """The vocabulary's words in id order, without the padding and unknown tokens."""
        return self._tokens[2:]

    def token_id(self, word: str) -> int:
        return self._ids.get(word, UNK_ID)

    def encode(self, text: str) -> NDArray[np.int64]:
        """A (max_length,) int64 array of ids: the first max_length words, then padding."""
        ids = np.full(self.max_length, PAD_ID, dtype=np.int64)
        tokens = tokenize(text)[: self.max_length]
        ids[: len(tokens)] = [self._ids.get(t, UNK_ID) for t in tokens]
        return ids

    def encode_batch(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """An (N, max_length) int64 array, one row per text."""
        if not texts:
            return np.zeros((0, self.max_length), dtype=np.int64)
        return np.stack([self.encode(t) for t in texts])

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The words behind ids, padding dropped (for debugging and tests)."""
        return [self._tokens[i] for i in ids if i != PAD_ID]

    def to_dict(self) -> dict[str, object]:
        return {"format": TOKENIZER_FORMAT, "max_length": self.max_length, "words": self.words}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        if data.get("format") != TOKENIZER_FORMAT:
            raise ValueError(
                f"not a tokenizer: format {data.get('format')!r}, want {TOKENIZER_FORMAT!r}"
            )
        return cls(data["words"], int(data["max_length"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls.from_dict(json.loads(Path(path).read_text()))
