"""`fbmr data prepare`: seed layout in, a prepared dataset out.

Output layout (the training stages read it through `PreparedDataset`):

    OUT/
      manifest.json       counts per class and split, skipped files with reasons, source, settings
      label_map.json      category encoder/decoder (fbmr.core.labels.LabelMap)
      products.parquet    one row per product: cleaned fields, label, label_id, split
      images.parquet      one row per usable photo: image_id, product_id, file, label_id, split
      images/<id>.jpg     photos decoded by content, upright, RGB, padded square, `image_size` px

The dataset is built in `OUT.partial/` and renamed to OUT at the end, so OUT is either complete or
absent. An interrupted run leaves `OUT.partial/` behind and the next run with the same source and
settings resumes from it, keeping the photos already written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from fbmr.core.datasets import (
    PHOTOS,
    PREPARED_IMAGES,
    PREPARED_LABEL_MAP,
    PREPARED_MANIFEST,
    PREPARED_PRODUCTS,
    SEED_IMAGES,
    SEED_PRODUCTS,
    photo_file,
)
from fbmr.core.decode import ImageDecodeError
from fbmr.core.fileio import atomic_path, atomic_write_json
from fbmr.core.image import square_photo
from fbmr.core.labels import LabelMap
from fbmr.training.data.seed import (
    IMAGE_COLUMNS,
    PRODUCT_COLUMNS,
    CleanCounts,
    SeedSource,
    clean_images,
    clean_products,
    drop_products_without_images,
)
from fbmr.training.data.settings import PrepareSettings
from fbmr.training.data.split import SPLITS, split_products

MANIFEST_FORMAT = "fbmr.prepared/1"
# What identifies a run in OUT.partial/, so that a resume never mixes two configurations.
RUN_KEY = "run.json"


class PrepareError(RuntimeError):
    """The output folder cannot be written as asked; nothing was changed."""


@dataclass(frozen=True)
class ImageOutcome:
    image_id: str
    status: str  # "written", "reused" or "skipped"
    reason: str = ""


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _process_image(
    source: SeedSource, image_id: str, root: Path, settings: PrepareSettings
) -> ImageOutcome:
    target = root / photo_file(image_id)
    if target.exists():  # written by an interrupted run: files only appear once complete
        return ImageOutcome(image_id, "reused")
    try:
        data = source.fs.cat_file(source.image_path(image_id))
    except FileNotFoundError:
        return ImageOutcome(image_id, "skipped", "file not found")
    except OSError as err:
        return ImageOutcome(image_id, "skipped", f"cannot read file: {err}")
    try:
        photo = square_photo(data, settings.image_size)
    except ImageDecodeError as err:
        return ImageOutcome(image_id, "skipped", str(err))
    with atomic_path(target) as tmp:
        photo.save(tmp, format="JPEG", quality=settings.jpeg_quality)
    return ImageOutcome(image_id, "written")


def _counts_by_split(
    products: pd.DataFrame, images: pd.DataFrame, classes: tuple[str, ...]
) -> dict[str, Any]:
    result = {}
    for split in SPLITS:
        p = products[products["split"] == split]
        i = images[images["split"] == split]
        per_class_products = p["label"].value_counts()
        per_class_images = i["label"].value_counts()
        result[split] = {
            "products": len(p),
            "images": len(i),
            "per_class": {
                c: {
                    "products": int(per_class_products.get(c, 0)),
                    "images": int(per_class_images.get(c, 0)),
                }
                for c in classes
            },
        }
    return result


def _check_output(out: Path, run_key: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest when OUT already holds this very dataset; raises PrepareError when
    OUT or OUT.partial/ hold something else and `overwrite` is off."""
    partial = _partial_dir(out)
    if out.exists() and not overwrite:
        manifest_path = out / PREPARED_MANIFEST
        if not manifest_path.is_file():
            if out.is_dir() and not any(out.iterdir()):
                return None
            raise PrepareError(
                f"{out} exists and is not a prepared dataset; choose another --out, or pass "
                "--overwrite to replace it"
            )
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("run") == run_key:
            return manifest
        raise PrepareError(
            f"{out} holds a dataset prepared from another source or with other settings "
            f"({manifest.get('run')}); choose another --out, or pass --overwrite to replace it"
        )
    if partial.exists() and not overwrite:
        key_path = partial / RUN_KEY
        if key_path.is_file() and json.loads(key_path.read_text()) != run_key:
            raise PrepareError(
                f"{partial} holds an interrupted run with another source or other settings; "
                "delete it, or pass --overwrite to start afresh"
            )
    return None


def prepare_dataset(
    src: str,
    out: Path,
    settings: PrepareSettings | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_image: Callable[[ImageOutcome], None] | None = None,
) -> dict[str, Any]:
    """Clean, join, split and store the seed data at `src` as a prepared dataset in `out`.

    Returns the manifest. Re-running with the same source and settings returns the existing
    manifest without work; anything else already at `out` is refused unless `overwrite`.
    `on_image` is called after each photo (progress hooks, tests).
    """
    settings = settings or PrepareSettings()
    started = time.monotonic()
    out = Path(out)
    source = SeedSource.open(src)
    run_key = {
        "source": source.url,
        "products_sha256": source.checksum(SEED_PRODUCTS),
        "images_sha256": source.checksum(SEED_IMAGES),
        "settings": dataclasses.asdict(settings),
    }
    existing = _check_output(out, run_key, overwrite)
    if existing is not None:
        return existing

    partial = _partial_dir(out)
    if overwrite and partial.exists():
        shutil.rmtree(partial)
    images_dir = partial / PHOTOS
    images_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(partial / RUN_KEY, run_key)

    counts = CleanCounts()
    products = clean_products(source.read_csv(SEED_PRODUCTS, PRODUCT_COLUMNS), counts)
    images = clean_images(source.read_csv(SEED_IMAGES, IMAGE_COLUMNS), products, counts)
    before = len(products)
    products = drop_products_without_images(products, images)
    counts.products_without_photo = before - len(products)
    images = images[images["product_id"].isin(products["product_id"])]

    outcomes: list[ImageOutcome] = []
    # Pillow releases the GIL while decoding and resizing, so threads use every core, and they
    # share the fsspec filesystem (memory://, s3://) where processes could not.
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        results = pool.map(
            lambda image_id: _process_image(source, image_id, partial, settings),
            images["image_id"],
        )
        for outcome in tqdm(results, total=len(images), desc="photos", disable=not progress):
            outcomes.append(outcome)
            if on_image is not None:
                on_image(outcome)
    finally:
        # On an interruption, stop at once; the photos written so far are kept for the resume.
        pool.shutdown(wait=True, cancel_futures=True)

    skipped = [o for o in outcomes if o.status == "skipped"]
    skipped_ids = {o.image_id for o in skipped}
    images = images[~images["image_id"].isin(skipped_ids)]
    before = len(products)
    products = drop_products_without_images(products, images)
    products_without_usable_photo = before - len(products)

    label_map = LabelMap.from_labels(products["label"])
    products["label_id"] = products["label"].map(label_map.encode).astype("int64")
    products["split"] = split_products(
        products, settings.val_ratio, settings.test_ratio, settings.seed
    )
    products["n_images"] = (
        products["product_id"].map(images["product_id"].value_counts()).astype("int64")
    )
    images = images.merge(products[["product_id", "label", "label_id", "split"]], on="product_id")
    images["file"] = images["image_id"].map(photo_file)
    # Photos of products that were dropped after an interrupted run must not linger.
    kept = set(images["image_id"])
    for path in images_dir.glob("*.jpg"):
        if path.stem not in kept:
            path.unlink()

    products.to_parquet(partial / PREPARED_PRODUCTS, index=False)
    images.to_parquet(partial / PREPARED_IMAGES, index=False)
    label_map.save(partial / PREPARED_LABEL_MAP)
    manifest = {
        "format": MANIFEST_FORMAT,
        "run": run_key,
        "source": source.url,
        "settings": dataclasses.asdict(settings),
        "classes": list(label_map.classes),
        "counts": {
            **dataclasses.asdict(counts),
            "images_skipped": len(skipped),
            "images_written": sum(o.status == "written" for o in outcomes),
            "images_reused": sum(o.status == "reused" for o in outcomes),
            "products_without_usable_photo": products_without_usable_photo,
            "products": len(products),
            "images": len(images),
        },
        "splits": _counts_by_split(products, images, label_map.classes),
        "skipped": [{"image_id": o.image_id, "reason": o.reason} for o in skipped],
        "seconds": round(time.monotonic() - started, 2),
    }
    atomic_write_json(partial / PREPARED_MANIFEST, manifest)
    (partial / RUN_KEY).unlink()
    _publish(partial, out)
    return manifest


def _publish(partial: Path, out: Path) -> None:
    """Move the finished dataset into place; an old one (with --overwrite) goes only after."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(partial, out)
    if old.exists():
        shutil.rmtree(old)
