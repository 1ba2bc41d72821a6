"""Hashed n-grams, the text model's main input: which n-grams a tokeniser hashes and into how
many ids (`NgramHashing`), each kind of n-gram in a range of its own (`KINDS`, `kind_bounds`).

Each n-gram maps to one id by CRC-32 of its UTF-8 bytes: a hash defined by a standard, the same
in every process and on every platform (Python's `hash()` of a string is salted per process, so it
cannot be used). The ids 1..buckets fall in equal ranges, one per kind of n-gram (`KINDS`, in
order: word, character, then the name's word and character n-grams when on), so a model tells
the kinds apart by the id alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


def stable_hash(feature: str) -> int:
    """CRC-32 of the UTF-8 bytes of `feature`: an unsigned 32-bit hash that is the same in every
    process and on every platform."""
    return zlib.crc32(feature.encode("utf-8"))


# The kinds of n-gram, each hashed into its own range of ids: a feature string starts with its
# kind ("w grey sofa", "c <so", "nw sofa").
KINDS = ("w", "c", "nw", "nc")


def kind_bounds(buckets: int, kinds: int) -> list[tuple[int, int]]:
    """The id range (lo, hi] of each of the first `kinds` kinds of n-gram among ids 1..buckets:
    equal ranges, in `KINDS` order. A model reading the ids tells the kinds apart by them."""
    return [(k * buckets // kinds, (k + 1) * buckets // kinds) for k in range(kinds)]


@dataclass(frozen=True)
class NgramHashing:
    """Which n-grams a tokeniser hashes, into how many buckets, and how many slots it keeps."""

    # ids 1..buckets (0 is padding), one equal range per kind of n-gram (`KINDS`), so a model can
    # weigh the kinds apart
    buckets: int = 1 << 20
    # distinct n-grams kept per text (97% of the real sample's listings have fewer)
    slots: int = 2048
    word_ngrams: int = 2  # word n-grams of length 1 up to this
    char_min: int = 2  # character n-grams of each word (with its boundaries) from char_min...
    char_max: int = 5  # ...to char_max characters; char_min 0 turns them off
    # the name's n-grams again, as kinds of their own (files from before the setting: off)
    name_ngrams: bool = False

    def __post_init__(self) -> None:
        if self.buckets < 2 * self.kinds or self.slots < 1 or self.word_ngrams < 0:
            raise ValueError(f"n-gram hashing needs 2 buckets a kind, slots >= 1: {self}")
        if self.char_min and not 1 <= self.char_min <= self.char_max:
            raise ValueError(f"character n-grams need 1 <= char_min <= char_max: {self}")

    @property
    def kinds(self) -> int:
        """How many kinds of n-gram the ids hold: the first 2 or all 4 of `KINDS`."""
        return 4 if self.name_ngrams else 2

    def bucket(self, feature: str) -> int:
        """The id of one n-gram, in its kind's range ("w ...": a word n-gram, "c ...": a
        character n-gram, "nw ..." and "nc ...": the same of the name)."""
        lo, hi = kind_bounds(self.buckets, self.kinds)[KINDS.index(feature.split(" ", 1)[0])]
        return 1 + lo + stable_hash(feature) % (hi - lo)

    def word_features(self, word: str, prefix: str = "") -> list[str]:
        """A word's own n-grams: the word, then its character n-grams (with boundaries); `prefix`
        "n" for a word of the name."""
        features = [f"{prefix}w {word}"] if self.word_ngrams >= 1 else []
        if self.char_min:
            marked = f"<{word}>"
            for n in range(self.char_min, self.char_max + 1):
                features.extend(
                    f"{prefix}c {marked[i : i + n]}" for i in range(len(marked) - n + 1)
                )
        return features
