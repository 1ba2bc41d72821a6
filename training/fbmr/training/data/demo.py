"""Deterministic demo listings in the exact layout of the real marketplace seed data.

Why: the real sample cannot ship with the repository, yet a stranger must be able to run the
demo, the training pipeline and the tests with no download. `generate_demo` writes
`Products.csv`, `Images.csv` and `images/<id>.jpg` as the real seed does, with:

- content that is learnable but not trivial: each category has its own vocabulary and its own
  visual signature (palette, shape, texture), blurred by shared words, shared colours,
  distractor shapes, noise, and "hard" listings whose photo or text points elsewhere;
- every quirk the real loader must clean (bare `\\r` in fields, a duplicated row, a missing
  label, products without photos, PNG bytes under `.jpg`, a corrupt and a missing photo, an
  EXIF-rotated JPEG, non-square photos), always present so the demo exercises each rule.

The same seed gives byte-identical files; only `random.Random(seed)` and
`numpy.random.default_rng(seed)` are used, never global random state.

The categories (their words, price ranges and looks), the shared words, the sellers' boilerplate
and the towns are data, in `demo_vocabulary.toml` beside this module (read by
`fbmr.training.data.demo_vocabulary`); the texts are written by `fbmr.training.data.demo_text`,
and the photos painted from a category's look by `fbmr.training.data.demo_photos`.
"""

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fbmr.core.datasets import PHOTOS, SEED_IMAGES, SEED_PRODUCTS, photo_file
from fbmr.training.data.demo_photos import Look, write_photo
from fbmr.training.data.demo_text import (
    category_words,
    make_description,
    make_price,
    make_title,
    with_carriage_return,
)
from fbmr.training.data.demo_vocabulary import PLACES, TABLE
from fbmr.training.data.settings import DemoSettings


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo` wrote."""

    out: Path
    products: int
    images: int
    seconds: float


_PRODUCTS_HEADER = ",id,product_name,category,product_description,price,location\n"
_IMAGES_HEADER = ",id,product_id,bucket_link,image_ref,create_time\r\n"
_IMAGE_REF_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Photo quirks, one photo each; non-square ("wide") photos are counted separately.
_PHOTO_QUIRKS = ("png", "corrupt", "missing", "exif")


@dataclass
class _Product:
    id: str
    path: str
    name: str
    description: str
    price: str
    location: str
    look: Look
    roles: tuple[str, ...]
    photo_kinds: list[str]


@dataclass(frozen=True)
class _Photo:
    id: str
    product_id: str
    kind: str
    look: Look
    ref: str
    created: str


def generate_demo(
    out: Path,
    products_per_category: int = DemoSettings.products_per_category,
    image_size: int = DemoSettings.image_size,
    seed: int = DemoSettings.seed,
    hard_fraction: float = DemoSettings.hard_fraction,
    progress: bool = True,
) -> DemoSummary:
    """Write demo `Products.csv`, `Images.csv` and `images/` into `out` (new or empty).

    Each of the 13 categories gets `products_per_category` labelled listings; one unlabelled
    listing and one exact duplicate row are added on top. `hard_fraction` of the labelled
    listings have a photo or (never both) a text drawn from another category.
    Raises FileExistsError if `out` holds anything, ValueError for out-of-range arguments.
    """
    DemoSettings(products_per_category, image_size, seed, hard_fraction)  # checks them
    out = Path(out)
    _prepare_out(out)
    start = time.perf_counter()
    rnd = random.Random(seed)
    products = _plan_products(rnd, products_per_category, hard_fraction)
    photos = _plan_photos(rnd, products)
    rows = _with_duplicate(rnd, products)
    _write_products_csv(out / SEED_PRODUCTS, rows)
    _write_images_csv(out / SEED_IMAGES, photos)
    pixels = np.random.default_rng(seed)
    backgrounds = tuple(c.look.background for c in TABLE)  # what a swapped background is
    for photo in tqdm(photos, desc="demo photos", unit="photo", disable=not progress):
        path = out / photo_file(photo.id)
        write_photo(path, photo.kind, photo.look, image_size, pixels, backgrounds)
    return DemoSummary(out, len(rows), len(photos), time.perf_counter() - start)


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} already exists and is not an empty folder; "
            "the demo never overwrites: pass a new or empty folder"
        )
    (out / PHOTOS).mkdir(parents=True, exist_ok=True)


def _uuid(rnd: random.Random) -> str:
    return str(uuid.UUID(int=rnd.getrandbits(128), version=4))


# --- listings ---------------------------------------------------------------------------


def _plan_products(rnd: random.Random, per_category: int, hard_fraction: float) -> list[_Product]:
    """Labelled listings in shuffled order, roles assigned, plus the unlabelled one."""
    labels = [c for c in range(len(TABLE)) for _ in range(per_category)]
    rnd.shuffle(labels)
    roles = _assign_roles(rnd, len(labels), hard_fraction)
    products = [_make_product(rnd, label, roles.get(i, ())) for i, label in enumerate(labels)]
    unlabelled = _make_product(rnd, rnd.randrange(len(TABLE)), ())
    unlabelled.path = ""
    products.insert(rnd.randrange(len(products) + 1), unlabelled)
    return products


def _assign_roles(rnd: random.Random, n: int, hard_fraction: float) -> dict[int, tuple[str, ...]]:
    """Which listing carries which quirk or hardness; quirks always land on distinct listings."""
    n_cr = max(4, n // 20)
    n_wide = max(3, n // 40)
    quirks = (
        ["no_photo", "no_photo", "duplicate"]
        + ["cr_bare", "cr_quoted"] * (n_cr // 2)
        + list(_PHOTO_QUIRKS)
        + ["wide"] * n_wide
    )
    chosen = rnd.sample(range(n), len(quirks))
    roles: dict[int, tuple[str, ...]] = {i: (q,) for i, q in zip(chosen, quirks, strict=True)}
    # Hard listings avoid the photo-less ones, whose hardness would go unseen.
    free = [i for i in range(n) if roles.get(i) != ("no_photo",)]
    hard = rnd.sample(free, min(len(free), round(hard_fraction * n)))
    for k, i in enumerate(hard):
        roles[i] = (*roles.get(i, ()), "image_hard" if k % 2 == 0 else "text_hard")
    return roles


def _make_product(rnd: random.Random, label: int, roles: Sequence[str]) -> _Product:
    category = TABLE[label]
    other = rnd.choice([c for c in range(len(TABLE)) if c != label])
    text_source = other if "text_hard" in roles else label
    look = TABLE[other].look if "image_hard" in roles else category.look
    title = make_title(rnd, category_words(text_source))
    description = make_description(rnd, label, other if "text_hard" in roles else None)
    if "cr_bare" in roles:
        description = with_carriage_return(rnd, description, quoted=False)
    elif "cr_quoted" in roles:
        description = with_carriage_return(rnd, description, quoted=True)
    town, county = rnd.choice(PLACES)
    # Most real titles name town and county; a few name the town only.
    where = f"{town}, {county}" if rnd.random() < 0.9 else town
    return _Product(
        id=_uuid(rnd),
        path=f"{category.name} / {rnd.choice(category.subcategories)}",
        name=f"{title} | in {where} | Gumtree",
        description=description,
        price=make_price(rnd, *category.price),
        location=f"{town}, {county}",
        look=look,
        roles=tuple(roles),
        photo_kinds=_photo_kinds(rnd, roles),
    )


def _photo_kinds(rnd: random.Random, roles: Sequence[str]) -> list[str]:
    if "no_photo" in roles:
        return []
    special = next((r for r in roles if r in (*_PHOTO_QUIRKS, "wide")), None)
    if special is not None:
        # A second, ordinary photo keeps the listing usable once its odd photo is dropped.
        return [special, "square"]
    return ["square"] * (1 if rnd.random() < 0.2 else 2)


def _with_duplicate(rnd: random.Random, products: list[_Product]) -> list[_Product]:
    """Rows as written: the listing chosen for duplication appears a second time, later on."""
    source = next(i for i, p in enumerate(products) if "duplicate" in p.roles)
    rows = list(products)
    rows.insert(rnd.randint(source + 1, len(rows)), products[source])
    return rows


def _plan_photos(rnd: random.Random, products: Sequence[_Product]) -> list[_Photo]:
    first_day = date(2022, 1, 1)
    return [
        _Photo(
            id=_uuid(rnd),
            product_id=product.id,
            kind=kind,
            look=product.look,
            ref="".join(rnd.choices(_IMAGE_REF_CHARS, k=16)),
            created=(first_day + timedelta(days=rnd.randrange(90))).isoformat(),
        )
        for product in products
        for kind in product.photo_kinds
    ]


# --- CSV files ----------------------------------------------------------------------------


def _field(value: str) -> str:
    # Quote only where a comma, quote or newline forces it: a bare \r stays unquoted, as in
    # the real export, which is why the csv module (it would quote \r) is not used.
    if any(c in value for c in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _write_products_csv(path: Path, rows: Sequence[_Product]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(_PRODUCTS_HEADER)
        for i, p in enumerate(rows):
            fields = (p.id, p.name, p.path, p.description, p.price, p.location)
            f.write(",".join([str(i), *map(_field, fields)]) + "\n")


def _write_images_csv(path: Path, photos: Sequence[_Photo]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(_IMAGES_HEADER)
        for i, photo in enumerate(photos):
            link = f"https://example-bucket.invalid/images/{photo.id}.jpg"
            fields = (photo.id, photo.product_id, link, photo.ref, photo.created)
            # The real Images.csv ends its rows with \r\n, unlike Products.csv.
            f.write(",".join([str(i), *map(_field, fields)]) + "\r\n")
