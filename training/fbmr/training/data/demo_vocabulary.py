"""The demo's vocabulary as data: the categories (their words, price ranges and looks), the words
they share, the sellers' boilerplate and the towns, read from `demo_vocabulary.toml` beside this
module (`TABLE` in the categories' order, `DEMO_CATEGORIES` their names)."""

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fbmr.training.data.demo_patterns import RGB
from fbmr.training.data.demo_photos import Look


@dataclass(frozen=True)
class Category:
    name: str
    subcategories: tuple[str, ...]
    words: tuple[str, ...]
    price: tuple[float, float]
    look: Look


def _vocabulary() -> dict[str, Any]:
    """The demo's words, towns and category looks: data, kept in demo_vocabulary.toml."""
    data = resources.files("fbmr.training.data").joinpath("demo_vocabulary.toml")
    return tomllib.loads(data.read_text(encoding="utf-8"))


def _rgb(values: Sequence[int]) -> RGB:
    red, green, blue = values
    return red, green, blue


_VOCABULARY = _vocabulary()
TABLE: tuple[Category, ...] = tuple(
    Category(
        c["name"],
        tuple(c["subcategories"]),
        tuple(c["words"]),
        (c["price"][0], c["price"][1]),
        Look(
            _rgb(c["background"]),
            (_rgb(c["foreground"][0]), _rgb(c["foreground"][1])),
            c["shape"],
            c["texture"],
        ),
    )
    for c in _VOCABULARY["category"]
)
DEMO_CATEGORIES: tuple[str, ...] = tuple(c.name for c in TABLE)
SHARED_WORDS: dict[str, tuple[int, ...]] = {
    word: tuple(owners) for word, owners in _VOCABULARY["shared_words"].items()
}
FILLER: tuple[str, ...] = tuple(_VOCABULARY["filler"])
TITLE_ADJECTIVES: tuple[str, ...] = tuple(_VOCABULARY["title_adjectives"])
PLACES: tuple[tuple[str, str], ...] = tuple(
    (town, county) for town, county in _VOCABULARY["places"]
)
