"""The demo generator writes the real seed layout, deterministically, with every quirk."""

import csv
import re
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from fbmr.training.data.demo import DemoSummary, generate_demo
from fbmr.training.data.demo_vocabulary import DEMO_CATEGORIES
from fbmr.training.data.settings import DemoSettings

PER_CATEGORY = 24
SIZE = 128


@pytest.fixture(scope="module")
def demo(demo_summary: DemoSummary) -> DemoSummary:
    """The session's demo data (tests/conftest.py), generated with the defaults these tests
    expect."""
    defaults = DemoSettings()
    assert (defaults.products_per_category, defaults.image_size, defaults.seed) == (
        PER_CATEGORY,
        SIZE,
        0,
    )
    return demo_summary


@pytest.fixture(scope="module")
def products(demo: DemoSummary) -> pd.DataFrame:
    return pd.read_csv(demo.out / "Products.csv", lineterminator="\n", index_col=0)


@pytest.fixture(scope="module")
def images(demo: DemoSummary) -> pd.DataFrame:
    # Rows end with \r\n, so the default line terminator is the right one here.
    return pd.read_csv(demo.out / "Images.csv", index_col=0)


def _top(category: str) -> str:
    return category.split(" / ")[0]


def _load(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError):
        return None


def test_layout_headers_and_row_counts(
    demo: DemoSummary, products: pd.DataFrame, images: pd.DataFrame
) -> None:
    raw_products = (demo.out / "Products.csv").read_bytes()
    raw_images = (demo.out / "Images.csv").read_bytes()
    assert raw_products.startswith(
        b",id,product_name,category,product_description,price,location\n"
    )
    assert raw_images.startswith(b",id,product_id,bucket_link,image_ref,create_time\r\n")
    assert list(products.columns) == [
        "id", "product_name", "category", "product_description", "price", "location",
    ]  # fmt: skip
    assert list(images.columns) == ["id", "product_id", "bucket_link", "image_ref", "create_time"]
    # 13 x 24 labelled listings, plus the unlabelled one and the duplicate row.
    assert len(products) == demo.products == 13 * PER_CATEGORY + 2
    assert len(images) == demo.images
    assert list(products.index) == list(range(len(products)))
    assert raw_products.count(b"\n") == len(products) + 1
    assert b"\r\n" not in raw_products
    assert raw_images.count(b"\r\n") == raw_images.count(b"\n") == len(images) + 1
    # Every photo row points at a listing; most listings have two photos.
    assert set(images.product_id) <= set(products.id)
    per_product = Counter(images.product_id)
    assert sum(n == 2 for n in per_product.values()) > sum(n == 1 for n in per_product.values())
    assert set(per_product.values()) <= {1, 2}


def test_field_formats(products: pd.DataFrame, images: pd.DataFrame) -> None:
    for value in [*products.id, *images.id]:
        assert uuid.UUID(value).version == 4
    assert products.price.str.fullmatch(r"£\d{1,3}(,\d{3})*\.\d{2}").all()
    assert products.price.str.contains(",").any()  # thousands separator present somewhere
    assert products.product_name.str.fullmatch(r"[^|]+ \| in [^|]+ \| Gumtree").all()
    assert products.location.str.fullmatch(r"[^,]+, [^,]+").all()
    assert not products.product_name.str.contains(",").all()  # some titles name no county
    assert (
        images.bucket_link == "https://example-bucket.invalid/images/" + images.id + ".jpg"
    ).all()
    assert images.image_ref.str.fullmatch(r"[A-Za-z0-9]{16}").all()
    assert images.create_time.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    words = products.product_description.map(lambda d: len(_words(d)))
    assert words.between(10, 40).all()


def test_categories_present_and_balanced(products: pd.DataFrame) -> None:
    assert len(DEMO_CATEGORIES) == 13
    labelled = products.category.dropna()
    counts = Counter(labelled.map(_top))
    assert set(counts) == set(DEMO_CATEGORIES)
    assert all(PER_CATEGORY <= n <= PER_CATEGORY + 1 for n in counts.values())
    assert labelled.str.split(" / ").str.len().between(2, 3).all()
    assert (labelled.str.split(" / ").str.len() == 3).any()
    # Each top level has its own few sub-categories.
    subs = labelled.groupby(labelled.map(_top)).nunique()
    assert subs.between(2, 3).all()


def test_carriage_returns_in_quoted_and_unquoted_fields(
    demo: DemoSummary, products: pd.DataFrame
) -> None:
    assert products.product_description.str.contains("\r").sum() >= 4
    unquoted = quoted = 0
    # Bytes, then decode: text mode would turn each bare \r into a line break.
    for line in (demo.out / "Products.csv").read_bytes().decode("utf-8").split("\n"):
        if "\r" not in line:
            continue
        try:
            (row,) = csv.reader([line])
        except csv.Error:  # the csv module refuses a bare \r outside quotes
            unquoted += 1
        else:
            quoted += "\r" in row[4]
    assert unquoted >= 2
    assert quoted >= 1


def test_duplicate_row_and_missing_label(demo: DemoSummary, products: pd.DataFrame) -> None:
    duplicated = products[products.id.duplicated(keep=False)]
    assert len(duplicated) == 2
    first, second = duplicated.itertuples(index=False)
    assert first == second
    assert products.category.isna().sum() == 1
    # Fields with quotes are written with doubled inner quotes and parse back.
    assert products.product_description.str.contains('" screen').any()
    assert '""' in (demo.out / "Products.csv").read_text(encoding="utf-8")


def test_products_without_photos(products: pd.DataFrame, images: pd.DataFrame) -> None:
    assert len(set(products.id) - set(images.product_id)) == 2


def test_photo_quirks(demo: DemoSummary, images: pd.DataFrame) -> None:
    folder = demo.out / "images"
    files = {p.stem: p for p in folder.iterdir()}
    assert all(p.suffix == ".jpg" for p in files.values())
    assert set(files) <= set(images.id)
    assert len(set(images.id) - set(files)) == 1  # listed, file missing

    heads = {stem: p.read_bytes()[:8] for stem, p in files.items()}
    assert sum(h.startswith(b"\x89PNG") for h in heads.values()) == 1
    assert sum(h.startswith(b"\xff\xd8\xff") for h in heads.values()) == len(files) - 1

    broken = [stem for stem, p in files.items() if _load(p) is None]
    assert len(broken) == 1
    assert heads[broken[0]].startswith(b"\xff\xd8")  # a truncated JPEG

    rotated = []
    sizes = Counter()
    for stem, path in files.items():
        if stem in broken:
            continue
        with Image.open(path) as image:
            sizes[image.size] += 1
            if image.getexif().get(0x0112) == 6:
                rotated.append(path)
    assert len(rotated) == 1
    stored = Image.open(rotated[0])
    upright = _load(rotated[0])
    assert upright is not None
    assert stored.height > stored.width and upright.width > upright.height

    assert sizes.most_common(1)[0][0] == (SIZE, SIZE)
    assert sizes[(SIZE * 3 // 2, SIZE)] >= 3
    assert set(sizes) == {(SIZE, SIZE), (SIZE * 3 // 2, SIZE), (SIZE, SIZE * 3 // 2)}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    runs = [
        generate_demo(tmp_path / name, 3, 48, seed=seed, progress=False)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    a, b, c = (run.out for run in runs)
    for name in ("Products.csv", "Images.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    photos = sorted((a / "images").iterdir())
    assert len(photos) > 50
    for photo in photos[:8]:
        assert photo.read_bytes() == (b / "images" / photo.name).read_bytes()
    assert not (c / "images" / photos[0].name).exists()
    assert runs[0].products == runs[1].products == 13 * 3 + 2


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        generate_demo(tmp_path, 3, 32, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(FileExistsError):
        generate_demo(tmp_path / "keep.txt", 3, 32, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_demo(empty, 3, 32, progress=False).products == 41


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"products_per_category": 2}, "products_per_category"),
        ({"image_size": 31}, "image_size"),
        ({"image_size": 1025}, "image_size"),
        ({"hard_fraction": -0.1}, "hard_fraction"),
        ({"hard_fraction": 0.6}, "hard_fraction"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_demo(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def _halves(products: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    labelled = products.dropna(subset=["category"]).drop_duplicates("id")
    labelled = labelled.assign(label=labelled.category.map(_top))
    return labelled.iloc[::2], labelled.iloc[1::2]


def _nearest_centroid_accuracy(
    train: np.ndarray, train_y: list[str], test: np.ndarray, test_y: list[str]
) -> float:
    classes = sorted(set(train_y))
    centroids = np.stack([train[np.array(train_y) == c].mean(axis=0) for c in classes])
    distances = ((test[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    predicted = np.array(classes)[distances.argmin(axis=1)]
    return float((predicted == np.array(test_y)).mean())


def test_photos_are_learnable(
    demo: DemoSummary, products: pd.DataFrame, images: pd.DataFrame
) -> None:
    first_photo = images.drop_duplicates("product_id").set_index("product_id").id

    def features(part: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        rows, labels = [], []
        for product_id, label in zip(part.id, part.label, strict=True):
            image = _load(demo.out / "images" / f"{first_photo.get(product_id)}.jpg")
            if image is not None:
                small = image.resize((8, 8), Image.Resampling.BOX)
                rows.append(np.asarray(small, dtype=np.float32).ravel())
                labels.append(label)
        return np.stack(rows), labels

    train, test = _halves(products)
    accuracy = _nearest_centroid_accuracy(*features(train), *features(test))
    assert accuracy > 0.4


def test_descriptions_are_learnable(products: pd.DataFrame) -> None:
    train, test = _halves(products)
    vocabulary = {
        w: i
        for i, w in enumerate(sorted({w for d in train.product_description for w in _words(d)}))
    }

    def bags(part: pd.DataFrame) -> np.ndarray:
        counts = np.zeros((len(part), len(vocabulary)), dtype=np.float32)
        for row, description in enumerate(part.product_description):
            for word in _words(description):
                if word in vocabulary:
                    counts[row, vocabulary[word]] += 1
        return counts / np.linalg.norm(counts, axis=1, keepdims=True).clip(min=1e-6)

    accuracy = _nearest_centroid_accuracy(
        bags(train), list(train.label), bags(test), list(test.label)
    )
    assert accuracy > 0.5


def _words(text: str) -> list[str]:
    # Split glued words too: "orderCollection" is "order" + "collection".
    return [w.lower() for w in re.findall(r"[A-Za-z][a-z]*", text)]
