"""Cleaning rules for the fields of a seed-layout listing (Products.csv), shared by every side.

Data preparation applies them to the whole catalogue; training reads a listing's text, and the
facade, the client and the index build read what a caller sends, through one function,
`model_text`, so that a product name still carrying the marketplace's `| in Town | Gumtree` suffix
turns into the same text (and token ids) the models were trained on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

# "Mirror wall art | in Wokingham, Berkshire | Gumtree" -> "Mirror wall art". The location part is
# optional because some titles end in just "| Gumtree".
_NAME_NOISE = re.compile(r"\s*\|\s*(?:in\s+[^|]*\|\s*)?Gumtree\s*$", re.IGNORECASE)
# The same suffix inside a free text (a title as written, then the description after it).
_NAME_NOISE_ANYWHERE = re.compile(r"\s*\|\s*(?:in\s+[^|]*\|\s*)?Gumtree\b", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
# Where a listing's name ends in its text: "Sun loungers | Two loungers, barely used". The
# tokeniser reads what comes before the first mark as the name, a field of its own (the words of a
# title say more than those of a description); the mark itself is no word, so the word ids are
# those of the name and description alone. A free text as the marketplace writes it carries the
# mark where the name's `| in Town | Gumtree` suffix was.
NAME_END = "|"
_PRICE_JUNK = re.compile(r"[£$€,\s]")


def clean_field(value: object) -> str:
    """A text field with bare carriage returns and runs of white space folded to single spaces.

    Missing values (None, NaN) become the empty string.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _WHITESPACE.sub(" ", str(value)).strip()


def clean_product_name(name: object) -> str:
    """The product title without the marketplace's location and site suffix."""
    return _NAME_NOISE.sub("", clean_field(name)).strip()


def label_from_category(category: object) -> str | None:
    """The top-level category (the label to predict) of a path such as `Home & Garden / Mirrors`.

    None when the category is missing or blank.
    """
    top = clean_field(category).split("/", 1)[0].strip()
    return top or None


def parse_price(price: object) -> float:
    """A price such as `£5,000.00` as a number; NaN when it is missing or not a price."""
    text = _PRICE_JUNK.sub("", clean_field(price))
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) and value >= 0 else math.nan


def listing_text(product_name: object = "", product_description: object = "") -> str:
    """The one text the text model reads for a listing: cleaned name, the name's end (`NAME_END`),
    then cleaned description; a description alone without the mark."""
    name, description = clean_product_name(product_name), clean_field(product_description)
    if not name:
        return description
    return f"{name} {NAME_END} {description}".rstrip()


def model_text(name: object = None, description: object = None, text: object = None) -> str:
    """The one text the text model reads for a listing, from the fields it comes with.

    Either the listing's fields, `name` (as the marketplace wrote it, suffix and all) and
    `description`, cleaned as data preparation cleans them (`listing_text`), or a free `text`
    (say a title as written followed by the description): white space folded and the
    marketplace's `| in Town | Gumtree` suffix replaced by the name's end (`NAME_END`) where it
    first appears, removed after. A text already cleaned comes back unchanged. ValueError when
    both the fields and a free text are given.
    """
    has_fields = bool(clean_field(name) or clean_field(description))
    if has_fields and clean_field(text):
        raise ValueError("give the listing's name and description, or a free text, not both")
    if has_fields:
        return listing_text(name, description)
    text = _NAME_NOISE_ANYWHERE.sub(f" {NAME_END} ", clean_field(text), count=1)
    return _WHITESPACE.sub(" ", _NAME_NOISE_ANYWHERE.sub(" ", text)).strip()


# -- a listing's photos in a table cell ----------------------------------------------------------
# One listing's photos as a table row or a logged update holds them: None for none, one location
# as a string (as every row held before listings could have several), or a list of several.
PhotoCell = str | list[str] | None


def photo_cell(photos: Sequence[str]) -> PhotoCell:
    """The cell holding `photos`: None, the one, or the list of several."""
    return None if not photos else photos[0] if len(photos) == 1 else list(photos)


def cell_photos(cell: object) -> list[str]:
    """A cell's photos as a list: none for None, NaN or "", one for a string, every non-empty
    item of a list, tuple or array (a Parquet list column reads as an array)."""
    items = list(cell) if isinstance(cell, list | tuple | np.ndarray) else [cell]
    return [
        str(item)
        for item in items
        if item is not None
        and not (isinstance(item, float) and math.isnan(item))
        and str(item) != ""
    ]
