"""The filter expressions sent to Milvus: a listing filter (`expression`), ids to delete or look
up (`id_list`), every value written as an escaped string literal (`literal`). Nothing a seller
or a caller sends can end a literal and change what an expression selects. pymilvus's own
`ids=` writes ids into the expression unescaped (a crafted id could select, and delete, every
listing), so it is never used."""

from __future__ import annotations

import json

from fbmr.serving.index.filters import ListingFilter


def literal(value: str) -> str:
    """`value` as a string literal of Milvus's expression language, whatever it holds.

    Every value that reaches an expression goes through here: Milvus reads a double-quoted
    literal with backslash escapes, so quotes, backslashes and control characters are escaped
    (JSON's escapes are its own) and nothing in `value` can end the literal. Non-ASCII
    characters go as they are: Milvus refuses the surrogate pairs JSON would write for an emoji.
    """
    return json.dumps(value, ensure_ascii=False)


def id_list(ids: list[str]) -> str:
    """`ids` as a list literal, for `id in ...`: what deletes and lookups by id use, never
    pymilvus's `ids=`, which writes the ids into the expression unescaped."""
    return f"[{', '.join(literal(i) for i in ids)}]"


def expression(where: ListingFilter, nullable: bool = False) -> str:
    """`where` as a Milvus filter expression ("" for no filter); `nullable` for a collection
    with nullable fields, where a null price fails a bound by itself."""
    parts = []
    if where.category is not None:
        parts.append(f"category == {literal(where.category)}")
    if not nullable and (where.price_min is not None or where.price_max is not None):
        parts.append("has_price == true")  # a listing without a price never passes a bound
    if where.price_min is not None:
        parts.append(f"price >= {float(where.price_min)!r}")
    if where.price_max is not None:
        parts.append(f"price <= {float(where.price_max)!r}")
    if where.location is not None:
        # LIKE's own wildcards in the substring are matched literally
        needle = where.location.casefold().replace("\\", "\\\\")
        needle = needle.replace("%", "\\%").replace("_", "\\_")
        parts.append(f"location_key like {literal('%' + needle + '%')}")
    if where.exclude_ids:
        parts.append(f"id not in {id_list(sorted(where.exclude_ids))}")
    return " and ".join(parts)
