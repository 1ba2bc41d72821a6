"""The demo listings' texts: titles, descriptions from a category's words and the shared filler
(a text-hard listing's from another category's), glued sentences and bare carriage returns as in
the real export, and log-uniform prices. Every draw comes from the caller's `random.Random`, in
the same order, so a seed gives the same texts."""

import math
import random
from collections.abc import Sequence

from fbmr.training.data.demo_vocabulary import FILLER, SHARED_WORDS, TABLE, TITLE_ADJECTIVES

INCHES = (5, 7, 10, 13, 15, 24, 27, 32, 42, 55)


def category_words(index: int) -> tuple[str, ...]:
    shared = tuple(w for w, owners in SHARED_WORDS.items() if index in owners)
    return TABLE[index].words + shared


def make_title(rnd: random.Random, words: Sequence[str]) -> str:
    nouns = [w.capitalize() for w in rnd.sample(words, rnd.randint(1, 2))]
    if rnd.random() < 0.5:
        nouns.insert(0, rnd.choice(TITLE_ADJECTIVES))
    return " ".join(nouns)


def make_description(rnd: random.Random, label: int, other: int | None) -> str:
    """10-40 words: own vocabulary mixed with filler; a text-hard one uses `other`'s instead."""
    if other is None:
        pools, weights = (category_words(label), FILLER), (0.45, 0.55)
    else:
        pools, weights = (category_words(other), FILLER), (0.3, 0.7)
    words = [rnd.choice(rnd.choices(pools, weights)[0]) for _ in range(rnd.randint(10, 40))]
    words = [
        f'{rnd.choice(INCHES)}" {w}' if w == "screen" and rnd.random() < 0.5 else w for w in words
    ]
    return sentences(rnd, words)


def sentences(rnd: random.Random, words: list[str]) -> str:
    """Group words into sentences; some are glued with no space, as where sellers' line
    breaks were lost (`working orderCollection only`)."""
    text, i = "", 0
    while i < len(words):
        n = rnd.randint(4, 9)
        chunk = [w + ("," if rnd.random() < 0.08 else "") for w in words[i : i + n]]
        sentence = " ".join(chunk).rstrip(",")
        sentence = sentence[0].upper() + sentence[1:]
        if text:
            text += "" if rnd.random() < 0.25 else ". "
        text += sentence
        i += n
    return text


def with_carriage_return(rnd: random.Random, description: str, quoted: bool) -> str:
    """Put bare `\\r` between words, as the real data's lost line breaks do. A field with no
    comma or quote is written unquoted, the harder case for a parser."""
    if quoted:
        description = description.replace(" ", ", ", 1) if "," not in description else description
    else:
        description = description.replace(",", "").replace('"', "")
    words = description.split(" ")
    for _ in range(rnd.randint(1, 3)):
        k = rnd.randrange(1, len(words))
        words[k] = "\r" + words[k][:1].upper() + words[k][1:]
    return " ".join(words).replace(" \r", "\r")


def make_price(rnd: random.Random, low: float, high: float) -> str:
    # Log-uniform: cheap listings are common, expensive ones rare, as on the real marketplace.
    value = math.exp(rnd.uniform(math.log(low), math.log(high)))
    pence = rnd.choice((0.0, 0.0, 0.0, 0.5, 0.99))
    return f"£{math.floor(value) + pence:,.2f}"
