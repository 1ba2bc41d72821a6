"""What `fbmr listings put` reads: a table of listings to put in the live similar-listing index.

A CSV, Parquet or JSON-lines table (read as `fbmr score` reads its tables,
`fbmr.client.batch.inputs`) with an `id` and a `name` column (the title as the marketplace wrote
it), and as the index needs them `description` and `photo` (a path relative to the table, absolute,
or an fsspec URL; a listing's several photos as a list, or in a CSV joined by `|`); optional
`category` (by default the facade predicts it), `price` and `location`. A photo is read when its
listing is sent, so a photo that cannot be read fails that row alone."""

from __future__ import annotations

import math
from pathlib import Path

from fbmr.client.batch.inputs import (
    InputError,
    optional_text,
    photo_locations,
    read_frame,
    table_base,
)
from fbmr.client.types import Listing
from fbmr.core.listing import parse_price

REQUIRED = ("id", "name")
OPTIONAL = ("description", "photo", "category", "price", "location")


def read_listings(location: str | Path) -> list[Listing]:
    """The table's rows as listings, in its order; an InputError names what is missing."""
    location = str(location)
    table = read_frame(location)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        found = list(table.columns)
        raise InputError(f"{location}: no {' or '.join(missing)} column; found {found}")
    base = table_base(location)
    listings = []
    for row in table.to_dict("records"):
        photos = photo_locations(base, row.get("photo"))
        value = {c: optional_text(row.get(c)) or None for c in (*REQUIRED, *OPTIONAL)}
        if value["id"] is None:
            raise InputError(f"{location}: a row without an id")
        # "£5,000" reads as the marketplace's prices do; a price given that is not one (-3,
        # "cheap") is sent as written, so the facade refuses that row and says why
        price = parse_price(value["price"])
        if math.isnan(price) and value["price"] is not None:
            price = _number(value["price"])
        listings.append(
            Listing(
                id=value["id"],
                name=value["name"] or "",
                description=value["description"] or "",
                photo=(photos[0] if len(photos) == 1 else photos) or None,
                category=value["category"],
                price=None if value["price"] is None else price,
                location=value["location"],
            )
        )
    return listings


def _number(text: str) -> float:
    """`text` as a number when it is one (a negative price), else NaN."""
    try:
        return float(text)
    except ValueError:
        return math.nan
