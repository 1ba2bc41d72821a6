"""Listing text to token ids: the tokeniser and its vocabulary artifact.

Training builds the vocabulary from the word2vec model and saves it with `Tokenizer.save`; the
facade and the client load that file, so the text model sees the same ids for the same words.

One fixed-length int64 array per text, in two parts:

    [0, max_words)                      word ids (the vocabulary's), then padding: the CNN's input
    [max_words, max_words + slots)      hashed n-gram bucket ids, then padding  } the bag of
    [max_words + slots, + 2 slots)      how often each of those n-grams occurs  } n-grams' input
    [max_length - pieces, max_length)   BERT WordPiece ids (`fbmr.core.wordpiece`), when the
                                        text model has a pretrained sentence encoder (format 4)

The n-grams (format 2 on) are the text's word unigrams and bigrams and the character 2-5-grams of
each word within word boundaries ("<sofa>": "<s", "so", ..., "fa>"), each distinct n-gram once,
in the order they first appear, with its count in the text beside it (TF-IDF's term frequency:
listings repeat the words that matter; with the TF-IDF baselines, counts measured 1 to 1.5
points of top-1 above presence alone). With `name_ngrams`, the listing's name (the text before
`fbmr.core.listing.NAME_END`) gives its word and character n-grams a second time as features of
their own, so a model can weigh a word in the title apart from the same word in the description
(format 3 on).

Each n-gram maps to one id by a stable hash into its kind's range (`fbmr.core.ngrams`). Format 1
files (words only) still load.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fbmr.core.listing import NAME_END
from fbmr.core.ngrams import NgramHashing
from fbmr.core.wordpiece import WordPiece

TOKENIZER_FORMAT = "fbmr.tokenizer/4"
# Format 3: no WordPiece part (`wordpiece` absent); read as it was written.
TOKENIZER_FORMAT_NO_PIECES = "fbmr.tokenizer/3"
# Format 2: n-grams without the name's (`name_ngrams` absent, off); read as it was written.
TOKENIZER_FORMAT_NO_NAMES = "fbmr.tokenizer/2"
# Format 1: words only (max_length word ids). Loaded as a tokeniser without n-grams.
TOKENIZER_FORMAT_WORDS_ONLY = "fbmr.tokenizer/1"
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


_WORD_CACHE_SIZE = 1 << 16


class Tokenizer:
    """Maps text to fixed-length token-id arrays with a fixed vocabulary and, optionally, hashed
    n-grams (see the module's docstring for the layout).

    Id 0 is padding and id 1 stands for any word outside the vocabulary; the vocabulary's words
    follow in the order given (word2vec's, most frequent first). `max_length` is the length of
    the whole array (the served tensor's), `max_words` that of its word part.
    """

    def __init__(
        self,
        words: Sequence[str],
        max_words: int = DEFAULT_MAX_LENGTH,
        ngrams: NgramHashing | None = None,
        wordpiece: WordPiece | None = None,
    ) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be positive, got {max_words}")
        words = list(words)
        bad = [w for w in words if w in (PAD_TOKEN, UNK_TOKEN) or tokenize(w) != [w]]
        if bad:
            raise ValueError(f"vocabulary words must be single tokens; not usable: {bad[:5]}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.max_words = max_words
        self.ngrams = ngrams
        self.wordpiece = wordpiece
        self._tokens = [PAD_TOKEN, UNK_TOKEN, *words]
        self._ids = {w: i for i, w in enumerate(self._tokens)}
        # A word's own n-gram ids depend on the word alone: computed once per distinct word.
        self._word_cache: dict[tuple[str, str], tuple[int, ...]] = {}

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        min_count: int = 1,
        max_words: int = DEFAULT_MAX_LENGTH,
        ngrams: NgramHashing | None = None,
    ) -> Tokenizer:
        """A vocabulary of every word seen at least `min_count` times, most frequent first."""
        counts: dict[str, int] = {}
        for text in texts:
            for token in tokenize(text):
                counts[token] = counts.get(token, 0) + 1
        ranked = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(ranked, max_words, ngrams)

    @property
    def max_length(self) -> int:
        """Length of an encoded text: word slots, n-gram id and count slots, WordPiece ids."""
        return (
            self.max_words
            + (2 * self.ngrams.slots if self.ngrams else 0)
            + (self.wordpiece.length if self.wordpiece else 0)
        )

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

    def _word_buckets(self, word: str, prefix: str) -> tuple[int, ...]:
        cached = self._word_cache.get((prefix, word))
        if cached is None:
            assert self.ngrams is not None
            features = self.ngrams.word_features(word, prefix)
            cached = tuple(self.ngrams.bucket(f) for f in features)
            if len(self._word_cache) >= _WORD_CACHE_SIZE:
                self._word_cache.clear()
            self._word_cache[(prefix, word)] = cached
        return cached

    def ngram_counts(self, tokens: Sequence[str], name: Sequence[str] = ()) -> dict[int, int]:
        """The distinct n-gram bucket ids of a token sequence (after those of the `name`'s tokens
        when the tokeniser reads names), in order of first appearance, at most `ngrams.slots` of
        them, each with how often it occurs ({} without n-grams)."""
        if self.ngrams is None:
            return {}
        spec = self.ngrams
        counts: dict[int, int] = {}  # dicts keep insertion order: first appearance
        fields = (("n", name), ("", tokens)) if spec.name_ngrams else (("", tokens),)
        for prefix, words in fields:
            for i, token in enumerate(words):
                candidates = list(self._word_buckets(token, prefix))
                for n in range(2, spec.word_ngrams + 1):
                    if i + 1 >= n:
                        gram = " ".join(words[i + 1 - n : i + 1])
                        candidates.append(spec.bucket(f"{prefix}w {gram}"))
                for bucket in candidates:
                    if bucket in counts:
                        counts[bucket] += 1
                    elif len(counts) < spec.slots:
                        counts[bucket] = 1
        return counts

    def encode(self, text: str) -> NDArray[np.int64]:
        """A (max_length,) int64 array: the ids of the first max_words words, padding, then the
        text's n-gram ids and padding, then their counts and padding. The name is what precedes
        the first `NAME_END` (a text without one has none). With a WordPiece vocabulary, the
        text's WordPiece ids end the array."""
        ids = np.full(self.max_length, PAD_ID, dtype=np.int64)
        tokens = tokenize(text)
        words = tokens[: self.max_words]
        ids[: len(words)] = [self._ids.get(t, UNK_ID) for t in words]
        if self.ngrams is not None:
            name = tokenize(text.split(NAME_END, 1)[0]) if NAME_END in text else []
            counts = self.ngram_counts(tokens, name)
            start = self.max_words
            ids[start : start + len(counts)] = list(counts)
            start += self.ngrams.slots
            ids[start : start + len(counts)] = list(counts.values())
        if self.wordpiece is not None:
            ids[-self.wordpiece.length :] = self.wordpiece.encode(text)
        return ids

    def known_share(self, text: str) -> float:
        """The share of `text`'s words that are in the vocabulary (words seen in training); 0
        for a text with none (emoji only, say): then the model only guessed."""
        words = tokenize(text)
        return sum(word in self._ids for word in words) / len(words) if words else 0.0

    def encode_batch(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """An (N, max_length) int64 array, one row per text."""
        if not texts:
            return np.zeros((0, self.max_length), dtype=np.int64)
        return np.stack([self.encode(t) for t in texts])

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The words behind the word part of ids, padding dropped (for debugging and tests)."""
        return [self._tokens[i] for i in list(ids)[: self.max_words] if i != PAD_ID]

    def to_dict(self) -> dict[str, object]:
        return {
            "format": TOKENIZER_FORMAT,
            "max_words": self.max_words,
            "max_length": self.max_length,
            "ngrams": asdict(self.ngrams) if self.ngrams else None,
            "wordpiece": self.wordpiece.to_dict() if self.wordpiece else None,
            "words": self.words,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        fmt = data.get("format")
        if fmt == TOKENIZER_FORMAT_WORDS_ONLY:
            return cls(data["words"], int(data["max_length"]))
        known = (TOKENIZER_FORMAT, TOKENIZER_FORMAT_NO_PIECES, TOKENIZER_FORMAT_NO_NAMES)
        if fmt not in known:
            raise ValueError(
                f"not a tokenizer this version reads: format {fmt!r}, want one of "
                f"{[*known, TOKENIZER_FORMAT_WORDS_ONLY]}"
            )
        ngrams, pieces = data.get("ngrams"), data.get("wordpiece")
        tokenizer = cls(
            data["words"],
            int(data["max_words"]),
            NgramHashing(**ngrams) if ngrams else None,
            WordPiece(pieces["vocab"], int(pieces["length"])) if pieces else None,
        )
        if tokenizer.max_length != data.get("max_length"):
            raise ValueError(
                f"tokenizer file says max_length {data.get('max_length')}, its settings give "
                f"{tokenizer.max_length}"
            )
        return tokenizer

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls.from_dict(json.loads(Path(path).read_text()))
