"""The file names of the two dataset layouts every side reads: the marketplace's seed layout
(`fbmr data demo` writes it, `fbmr data prepare` and `fbmr score` read it) and a prepared dataset
(`fbmr data prepare` writes it, training and `fbmr index build` read it).

Both keep a listing's photo at `images/<image id>.jpg` under their root.
"""

from __future__ import annotations

# the seed layout
SEED_PRODUCTS = "Products.csv"
SEED_IMAGES = "Images.csv"

# a prepared dataset
PREPARED_MANIFEST = "manifest.json"
PREPARED_LABEL_MAP = "label_map.json"
PREPARED_PRODUCTS = "products.parquet"
PREPARED_IMAGES = "images.parquet"

PHOTOS = "images"


def photo_file(image_id: str) -> str:
    """A photo's path relative to the root of either layout."""
    return f"{PHOTOS}/{image_id}.jpg"
