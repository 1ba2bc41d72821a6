"""Data preparation on the real marketplace sample (skipped where it is absent)."""

import numpy as np
import pandas as pd
import pytest

from fbmr.core.image import ImageSpec, image_pixels, normalize_pixels
from fbmr.training.data.prepare import PrepareSettings, prepare_dataset
from fbmr.training.data.prepared import PreparedDataset

# it prepares all 10,117 real photos: not the fast tier's
pytestmark = [pytest.mark.realdata, pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def prepared(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "prepared"
    prepare_dataset(str(real_data), out, PrepareSettings(image_size=64), progress=False)
    return PreparedDataset(out)


def test_real_sample_is_cleaned(prepared, real_data):
    raw = pd.read_csv(real_data / "Products.csv", lineterminator="\n")
    counts = prepared.manifest["counts"]
    assert counts["products_read"] == len(raw)
    assert len(prepared.label_map) == 13
    assert counts["products_without_photo"] > 0  # the README says a few have none
    assert counts["products"] + counts["products_without_photo"] <= len(raw)

    products = prepared.products()
    assert products["product_id"].is_unique
    assert not products["product_name"].str.contains(r"\| Gumtree").any()
    assert not products["product_description"].str.contains("\r").any()
    assert products["price"].notna().mean() > 0.99
    assert (products["n_images"] >= 1).all()
    # Every split holds every category in roughly the same share.
    shares = pd.crosstab(products["label"], products["split"], normalize="index")
    assert shares["train"].between(0.75, 0.85).all()


def test_real_photos_are_stored_square_and_split_by_product(prepared):
    images = prepared.images()
    assert images.groupby("product_id")["split"].nunique().max() == 1
    assert len(images) == prepared.manifest["counts"]["images"]
    assert len(list((prepared.root / "images").glob("*.jpg"))) == len(images)


def test_raw_uploads_and_prepared_photos_give_close_model_inputs(prepared, real_data):
    """The facade sees sellers' raw uploads (up to 1024 px, PNG under .jpg names); training sees the
    cleaned 256 px photos. Their model inputs must agree up to resampling and JPEG noise."""
    spec = ImageSpec.for_image_size(64)
    raw_files = sorted((real_data / "raw_images").glob("*.jpg"))
    known = set(prepared.images()["image_id"])
    gaps = []
    for path in raw_files:
        if path.stem in known:
            served = normalize_pixels(image_pixels(path.read_bytes(), spec), spec)
            trained = prepared.image_input(path.stem, spec)
            gaps.append(np.abs(served - trained).mean())
    assert len(gaps) >= 10
    # In normalised units (about 4.4 per full 0..255 swing), a mean gap of 0.1 is ~6 grey levels.
    assert np.median(gaps) < 0.1, f"train/serve input gap too large: {np.round(gaps, 3)}"
