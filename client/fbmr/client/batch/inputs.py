"""What `fbmr score` reads: a seed layout or a table, as rows of `id`, `text` and `photo`.

- A seed layout (a folder or fsspec URL holding Products.csv, Images.csv and images/) gives one
  row per listing: its id, its cleaned name and description (`fbmr.core.listing.listing_text`)
  and its photos (one, a list of several, or none for a listing without one). The CSVs are
  split on `\\n` only, as the marketplace export needs (bare `\\r` sits inside descriptions).
  This is a small reader of its own: `fbmr.training.data.seed` reads the same files for
  training, but the client installs without training (no torch), and `fbmr.core` holds no
  pandas.
- A table (CSV, Parquet, JSON lines) with an `id` column and `text` and/or `photo`; a photo is
  a path relative to the table's folder, an absolute path or an fsspec URL, and a listing's
  several photos a list of them (in a CSV, joined by `|`). Instead of `text`, a table may
  hold the listing's fields, `name` (as the marketplace wrote it) and/or
  `description`, read as training reads them (`listing_text`).

Photos are resolved to absolute paths or URLs here, so whoever scores a row (a local process
pool, a Ray actor on another node) reads it without knowing where the table was.
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path

import fsspec
import pandas as pd

from fbmr.core.listing import clean_field, listing_text, photo_cell

COLUMNS = ("id", "text", "photo")
FIELDS = {"name", "description"}  # a listing's text as its fields, instead of `text`
TABLE_FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


class InputError(ValueError):
    """The input cannot be scored as given (unknown format, missing columns, duplicate ids)."""


def _is_url(location: str) -> bool:
    return "://" in location


def _join(base: str, relative: str) -> str:
    return posixpath.join(base, relative) if _is_url(base) else str(Path(base) / relative)


def _is_seed_layout(location: str) -> bool:
    fs, root = fsspec.core.url_to_fs(location)
    return bool(fs.isdir(root) and fs.isfile(f"{root.rstrip('/')}/Products.csv"))


def _read_seed_csv(location: str, name: str, required: tuple[str, ...]) -> pd.DataFrame:
    with fsspec.open(_join(location, name), "rb") as f:
        table = pd.read_csv(f, lineterminator="\n", dtype=str, keep_default_na=False, index_col=0)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(f"{name} lacks columns {missing}; found {list(table.columns)}")
    return table.reset_index(drop=True)


def read_seed_layout(location: str) -> pd.DataFrame:
    """One row per listing of a seed layout (duplicate ids: the first kept), with its photos
    (a location, or a list of several, in Images.csv's order); listings without a photo get
    none (they are scored on their text)."""
    products = _read_seed_csv(
        location, "Products.csv", ("id", "product_name", "product_description")
    )
    ids = products["id"].map(clean_field)
    rows = pd.DataFrame(
        {
            "id": ids,
            "text": [
                listing_text(name, description)
                for name, description in zip(
                    products["product_name"], products["product_description"], strict=True
                )
            ],
        }
    )
    rows = rows[rows["id"] != ""].drop_duplicates("id", keep="first")
    photos: dict[str, list[str]] = {}
    fs, root = fsspec.core.url_to_fs(location)
    if fs.isfile(f"{root.rstrip('/')}/Images.csv"):
        images = _read_seed_csv(location, "Images.csv", ("id", "product_id"))
        for image_id, product_id in zip(
            images["id"].map(clean_field), images["product_id"].map(clean_field), strict=True
        ):
            if image_id and product_id:
                photos.setdefault(product_id, []).append(_join(location, f"images/{image_id}.jpg"))
    cells = [photo_cell(photos.get(i, [])) for i in rows["id"]]
    rows["photo"] = pd.Series(cells, index=rows.index, dtype=object)
    return rows.reset_index(drop=True)


def read_frame(location: str) -> pd.DataFrame:
    """A CSV, Parquet or JSON-lines table, by its extension (CSV cells as text)."""
    suffix = posixpath.splitext(location.rstrip("/"))[1].lower()
    if suffix not in TABLE_FORMATS:
        raise InputError(
            f"{location}: not a seed layout, and not a table by its extension "
            f"({', '.join(sorted(TABLE_FORMATS))})"
        )
    with fsspec.open(location, "rb") as f:
        fmt = TABLE_FORMATS[suffix]
        if fmt == "csv":
            return pd.read_csv(f, dtype=str, keep_default_na=False)
        if fmt == "parquet":
            return pd.read_parquet(f)
        return pd.read_json(f, lines=True, dtype=False)


def table_base(location: str) -> str:
    """Where a table's relative photo paths start: its folder."""
    return posixpath.dirname(location) if _is_url(location) else str(Path(location).parent)


def read_table(location: str) -> pd.DataFrame:
    """Rows of a CSV, Parquet or JSON-lines table with `id` and `text` and/or `photo`."""
    table = read_frame(location)
    columns = set(table.columns)
    fields = sorted(FIELDS & columns)
    if "id" not in columns or not ({"text", "photo"} | FIELDS) & columns:
        raise InputError(
            f"{location}: a table needs an `id` column and `text` (or `name` and/or "
            f"`description`) and/or `photo`; found {list(table.columns)}"
        )
    if "text" in columns and fields:
        raise InputError(f"{location}: give `text` or the fields {fields}, not both")
    base = table_base(location)
    rows = pd.DataFrame({"id": table["id"].map(lambda v: "" if pd.isna(v) else str(v))})
    if fields:
        names = table["name"] if "name" in columns else [None] * len(table)
        descriptions = table["description"] if "description" in columns else [None] * len(table)
        rows["text"] = [
            listing_text(*(optional_text(v) or "" for v in pair)) or None
            for pair in zip(names, descriptions, strict=True)
        ]
    else:
        rows["text"] = table["text"].map(optional_text) if "text" in columns else None
    if "photo" in table.columns:
        cells = [photo_cell(photo_locations(base, value)) for value in table["photo"]]
        rows["photo"] = pd.Series(cells, index=rows.index, dtype=object)
    else:
        rows["photo"] = None
    return rows


def optional_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)


def photo_location(base: str, value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return None
    text = str(value)
    if _is_url(text) or Path(text).is_absolute():
        return text
    return _join(base, text)


# several photos in one text cell (a CSV): their locations joined by this
PHOTO_SEPARATOR = "|"


def photo_locations(base: str, value: object) -> list[str]:
    """A cell's photos, resolved as `photo_location` resolves one: a list (Parquet, JSON lines)
    or a text of locations joined by PHOTO_SEPARATOR; [] for none."""
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(PHOTO_SEPARATOR)]
    elif hasattr(value, "__iter__") and not isinstance(value, bytes):
        items = list(value)
    else:
        items = [value]
    return [where for item in items if (where := photo_location(base, item)) is not None]


def read_input(location: str | Path) -> pd.DataFrame:
    """The rows to score: columns id, text (None: no text), photo (None: no photo; one
    location, or a list of several), in input order. Raises InputError for duplicate or empty
    ids: every row must be named once."""
    location = str(location)
    rows = read_seed_layout(location) if _is_seed_layout(location) else read_table(location)
    empty = int((rows["id"] == "").sum())
    if empty:
        raise InputError(f"{location}: {empty} rows without an id")
    duplicated = rows["id"][rows["id"].duplicated()]
    if len(duplicated):
        raise InputError(
            f"{location}: ids must be unique; {len(duplicated)} repeated, "
            f"e.g. {', '.join(map(str, duplicated.unique()[:3]))}"
        )
    rows = rows[list(COLUMNS)].reset_index(drop=True).astype(object)
    # plain Python values, None where missing (pandas 3 would infer strings with NaN)
    return rows.where(rows.notna(), None)


def fingerprint(rows: pd.DataFrame) -> str:
    """A digest of the rows to score, so that a resumed run can tell its input has not changed."""
    digest = hashlib.sha256()
    for column in COLUMNS:
        digest.update(column.encode())
        values = pd.util.hash_pandas_object(rows[column].astype("string"), index=True)
        digest.update(values.to_numpy().tobytes())
    return digest.hexdigest()
