"""Reading and cleaning the seed layout: Products.csv, Images.csv and images/<image id>.jpg.

The source is a local folder or any fsspec URL (s3://bucket/prefix with s3fs installed). Every
cleaning rule is one of `fbmr.core.listing`'s, so the facade cleans a listing the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import fsspec
import pandas as pd
from fsspec.spec import AbstractFileSystem

from fbmr.core.datasets import SEED_IMAGES, SEED_PRODUCTS, photo_file
from fbmr.core.listing import (
    clean_field,
    clean_product_name,
    label_from_category,
    parse_price,
)

PRODUCT_COLUMNS = ("id", "product_name", "category", "product_description", "price", "location")
IMAGE_COLUMNS = ("id", "product_id")


class SeedLayoutError(ValueError):
    """The source is not in the seed layout (a file or a column is missing)."""


@dataclass
class SeedSource:
    """A seed-layout folder on any fsspec filesystem."""

    url: str
    fs: AbstractFileSystem = field(repr=False)
    root: str

    @classmethod
    def open(cls, url: str) -> SeedSource:
        fs, root = fsspec.core.url_to_fs(url)
        root = root.rstrip("/")
        for name in (SEED_PRODUCTS, SEED_IMAGES):
            if not fs.isfile(f"{root}/{name}"):
                raise SeedLayoutError(f"{url!r} is not in the seed layout: {name} not found")
        return cls(url=fs.unstrip_protocol(root), fs=fs, root=root)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def image_path(self, image_id: str) -> str:
        return self.path(photo_file(image_id))

    def checksum(self, name: str) -> str:
        """SHA-256 of one of the CSV files, so a re-run can tell whether the source changed."""
        return hashlib.sha256(self.fs.cat_file(self.path(name))).hexdigest()

    def read_csv(self, name: str, required: tuple[str, ...]) -> pd.DataFrame:
        """A seed CSV as strings. Rows end in `\\n`; bare `\\r` inside fields stays in the field
        (and Images.csv's `\\r\\n` endings leave a `\\r` on its last column), so split on `\\n`
        only and strip the strays here and in the cleaning rules."""
        with self.fs.open(self.path(name), "rb") as f:
            table = pd.read_csv(
                f, lineterminator="\n", dtype=str, keep_default_na=False, index_col=0
            )
        table.columns = [str(c).strip() for c in table.columns]
        missing = [c for c in required if c not in table.columns]
        if missing:
            raise SeedLayoutError(f"{name} lacks columns {missing}; found {list(table.columns)}")
        return table.reset_index(drop=True)


@dataclass
class CleanCounts:
    """What cleaning removed, reported in the manifest."""

    products_read: int = 0
    duplicate_product_ids: int = 0
    duplicate_listings: int = 0
    products_without_label: int = 0
    images_read: int = 0
    duplicate_image_ids: int = 0
    images_without_product: int = 0
    products_without_photo: int = 0


def clean_products(raw: pd.DataFrame, counts: CleanCounts) -> pd.DataFrame:
    """Products with cleaned fields and a label; duplicates and unlabelled ones removed."""
    counts.products_read = len(raw)
    products = pd.DataFrame(
        {
            "product_id": raw["id"].map(clean_field),
            "product_name": raw["product_name"].map(clean_product_name),
            "product_description": raw["product_description"].map(clean_field),
            "category": raw["category"].map(clean_field),
            "label": raw["category"].map(label_from_category),
            "price": raw["price"].map(parse_price).astype("float64"),
            "location": raw["location"].map(clean_field),
        }
    )
    products = products[products["product_id"] != ""]
    before = len(products)
    products = products.drop_duplicates("product_id", keep="first")
    counts.duplicate_product_ids = before - len(products)
    # The same listing posted again under a new id would otherwise land on both sides of a split.
    content = ["product_name", "product_description", "category", "price", "location"]
    before = len(products)
    products = products.drop_duplicates(content, keep="first")
    counts.duplicate_listings = before - len(products)
    labelled = products["label"].notna()
    counts.products_without_label = int((~labelled).sum())
    return products[labelled].reset_index(drop=True)


def clean_images(raw: pd.DataFrame, products: pd.DataFrame, counts: CleanCounts) -> pd.DataFrame:
    """Image rows of known products, one per image id, in file order."""
    counts.images_read = len(raw)
    images = pd.DataFrame(
        {"image_id": raw["id"].map(clean_field), "product_id": raw["product_id"].map(clean_field)}
    )
    images = images[images["image_id"] != ""]
    before = len(images)
    images = images.drop_duplicates("image_id", keep="first")
    counts.duplicate_image_ids = before - len(images)
    known = images["product_id"].isin(products["product_id"])
    counts.images_without_product = int((~known).sum())
    return images[known].reset_index(drop=True)


def drop_products_without_images(products: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """The products that have at least one image row left."""
    return products[products["product_id"].isin(images["product_id"])].reset_index(drop=True)
