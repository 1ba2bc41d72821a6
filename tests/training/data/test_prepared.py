"""Training reads prepared data through the same fbmr.core functions the facade uses, so the same
photo and the same listing give identical model inputs on both sides."""

import numpy as np
import pandas as pd
import pytest

from fbmr.core.image import ImageSpec, image_pixels, normalize_pixels
from fbmr.core.listing import listing_text
from fbmr.core.text import Tokenizer
from fbmr.training.data.prepared import PreparedDataset

SPEC = ImageSpec.for_image_size(56)


@pytest.fixture(scope="module")
def dataset(demo_prepared):
    return PreparedDataset(demo_prepared)


@pytest.fixture(scope="module")
def tokenizer(dataset):
    return Tokenizer.from_corpus(
        dataset.products("train").apply(dataset.text, axis=1), max_words=32
    )


def test_tables_and_label_map(dataset):
    products, images = dataset.products(), dataset.images()
    assert len(dataset.label_map) == 13
    assert set(products["split"]) == {"train", "val", "test"}
    assert sum(len(dataset.products(s)) for s in ("train", "val", "test")) == len(products)
    assert (products["label_id"] == products["label"].map(dataset.label_map.encode)).all()
    assert images["image_id"].map(lambda i: dataset.image_path(i).is_file()).all()
    with pytest.raises(ValueError, match="unknown split"):
        dataset.products("dev")


def test_each_photo_finds_its_products_row(dataset):
    for split in ("train", "test"):
        images, products = dataset.images(split), dataset.products(split)
        rows = dataset.product_rows(split)
        assert len(rows) == len(images) and rows.max() < len(products)
        assert (products["product_id"].to_numpy()[rows] == images["product_id"].to_numpy()).all()
        assert len(set(rows.tolist())) > 1


def test_not_a_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="fbmr data prepare"):
        PreparedDataset(tmp_path)


def test_photo_gives_identical_arrays_in_training_and_serving(dataset):
    for image_id in dataset.images("val")["image_id"].head(5):
        trained = dataset.image_input(image_id, SPEC)
        # The facade gets the photo as uploaded bytes and sends its pixels; the served image
        # encoder normalises them in its graph as normalize_pixels does.
        pixels = image_pixels(dataset.image_path(image_id).read_bytes(), SPEC)
        assert pixels.dtype == np.uint8
        served = normalize_pixels(pixels, SPEC)
        assert trained.dtype == served.dtype == np.float32
        np.testing.assert_array_equal(trained, served)
        # and both are the ImageNet evaluation transform, written independently with
        # torchvision: pad square (black, centred), resize, centre crop, scale and normalise
        np.testing.assert_allclose(served, _torchvision(dataset.image_path(image_id)), atol=1e-5)


def _torchvision(path):
    from PIL import Image, ImageOps
    from torchvision import transforms

    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    side = max(image.size)
    padded = ImageOps.pad(image, (side, side), color=(0, 0, 0), centering=(0.5, 0.5))
    pipeline = transforms.Compose(
        [
            transforms.Resize((SPEC.resize_size, SPEC.resize_size)),
            transforms.CenterCrop(SPEC.image_size),
            transforms.ToTensor(),
            transforms.Normalize(SPEC.mean, SPEC.std),
        ]
    )
    return pipeline(padded).numpy()


def test_listing_gives_identical_token_ids_in_training_and_serving(dataset, demo_seed, tokenizer):
    # The facade gets the seller's raw fields: name with its `| in Town | Gumtree` suffix and
    # description with bare carriage returns, exactly as in the seed CSV.
    raw = pd.read_csv(
        demo_seed / "Products.csv", lineterminator="\n", dtype=str, keep_default_na=False
    )
    raw = raw.drop_duplicates("id").set_index("id")
    products = dataset.products("val")
    assert raw.loc[products["product_id"], "product_name"].str.contains("Gumtree").all()
    for _, product in products.iterrows():
        source = raw.loc[product["product_id"]]
        served = tokenizer.encode(
            listing_text(source["product_name"], source["product_description"])
        )
        np.testing.assert_array_equal(dataset.text_input(product, tokenizer), served)
    assert any("\r" in d for d in raw["product_description"]), "demo data lacks the \\r quirk"
