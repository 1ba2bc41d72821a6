"""Reading and cleaning the seed layout, on files shaped like the real export's quirks."""

import pandas as pd
import pytest

from fbmr.training.data.seed import (
    IMAGE_COLUMNS,
    PRODUCT_COLUMNS,
    CleanCounts,
    SeedLayoutError,
    SeedSource,
    clean_images,
    clean_products,
    drop_products_without_images,
)
from tests.helpers import write_seed_layout

MIRROR = {
    "id": "p1",
    "product_name": "Mirror wall art | in Wokingham, Berkshire | Gumtree",
    "category": "Home & Garden / Dining, Living Room Furniture / Mirrors, Clocks & Ornaments",
    "product_description": "Mirror wall art.\rSize 45x45cm",  # bare CR in an unquoted field
    "price": "£5,000.00",
    "location": "Wokingham, Berkshire",
}
KETTLE = {
    "id": "p2",
    "product_name": "Kettle | in Leeds | Gumtree",
    "category": "Appliances / Small Appliances",
    "product_description": 'Works, "like new"\r\rcollection only',
    "price": "£12.00",
    "location": "Leeds, West Yorkshire",
}


def _source(tmp_path, products, images):
    return SeedSource.open(str(write_seed_layout(tmp_path / "seed", products, images, {})))


def test_bare_carriage_returns_do_not_break_rows(tmp_path):
    source = _source(tmp_path, [MIRROR, KETTLE], [{"id": "i1", "product_id": "p1"}])
    products = source.read_csv("Products.csv", PRODUCT_COLUMNS)
    assert len(products) == 2
    assert products.loc[0, "product_description"] == "Mirror wall art.\rSize 45x45cm"
    assert products.loc[1, "price"] == "£12.00"
    # Images.csv rows end in CRLF: the last column keeps no stray CR in its name.
    images = source.read_csv("Images.csv", IMAGE_COLUMNS)
    assert "create_time" in images.columns and len(images) == 1


def test_cleaned_products(tmp_path):
    source = _source(tmp_path, [MIRROR, KETTLE], [])
    counts = CleanCounts()
    products = clean_products(source.read_csv("Products.csv", PRODUCT_COLUMNS), counts)
    mirror, kettle = products.iloc[0], products.iloc[1]
    assert mirror["product_name"] == "Mirror wall art"
    assert mirror["label"] == "Home & Garden"
    assert mirror["price"] == 5000.0
    assert mirror["product_description"] == "Mirror wall art. Size 45x45cm"
    assert kettle["product_description"] == 'Works, "like new" collection only'
    assert kettle["label"] == "Appliances"
    assert counts.products_read == 2


def test_duplicates_and_unlabelled_products_are_removed_and_counted():
    raw = pd.DataFrame(
        [
            MIRROR,
            MIRROR,  # exported twice
            {**MIRROR, "id": "p9"},  # the same listing posted again under a new id
            {**KETTLE, "id": "p3", "category": ""},  # no label
            KETTLE,
        ]
    )
    counts = CleanCounts()
    products = clean_products(raw, counts)
    assert products["product_id"].tolist() == ["p1", "p2"]
    assert (counts.duplicate_product_ids, counts.duplicate_listings) == (1, 1)
    assert counts.products_without_label == 1
    assert counts.products_read == 5


def test_images_are_joined_to_known_products():
    counts = CleanCounts()
    products = clean_products(pd.DataFrame([MIRROR, KETTLE]), counts)
    raw_images = pd.DataFrame(
        {"id": ["i1", "i1", "i2", "i3"], "product_id": ["p1", "p1", "gone", "p1"]}
    )
    images = clean_images(raw_images, products, counts)
    assert images["image_id"].tolist() == ["i1", "i3"]
    assert (counts.duplicate_image_ids, counts.images_without_product) == (1, 1)
    assert drop_products_without_images(products, images)["product_id"].tolist() == ["p1"]


def test_missing_files_and_columns_are_clear_errors(tmp_path):
    with pytest.raises(SeedLayoutError, match=r"Products\.csv not found"):
        SeedSource.open(str(tmp_path))
    source = _source(tmp_path, [MIRROR], [])
    with pytest.raises(SeedLayoutError, match="lacks columns"):
        source.read_csv("Products.csv", (*PRODUCT_COLUMNS, "colour"))


def test_fsspec_urls_are_accepted(tmp_path):
    seed = write_seed_layout(tmp_path / "seed", [MIRROR], [], {})
    source = SeedSource.open(f"file://{seed}")
    assert source.url == f"file://{seed}"
    assert len(source.read_csv("Products.csv", PRODUCT_COLUMNS)) == 1
