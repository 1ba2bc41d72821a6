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
and the towns are data, in `demo_vocabulary.toml` beside this module; the photos are painted
from a category's look by `fbmr.training.data.demo_photos`.
"""

import math
import random
import time
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fbmr.core.datasets import PHOTOS, SEED_IMAGES, SEED_PRODUCTS, photo_file
from fbmr.training.data.demo_photos import RGB, Look, write_photo
from fbmr.training.data.settings import DemoSettings


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo` wrote."""

    out: Path
    products: int
    images: int
    seconds: float


@dataclass(frozen=True)
class _Category:
    name: str
    subcategories: tuple[str, ...]
    words: tuple[str, ...]
    price: tuple[float, float]
    look: Look


def _vocabulary() -> dict[str, Any]:
    """The demo's words, towns and category looks: data, kept in demo_vocabulary.toml."""
    data = resources.files("fbmr.training.data").joinpath("demo_vocabulary.toml")
    return tomllib.loads(data.read_text(encoding="utf-8"))


def _rgb(values: Sequence[int]) -> RGB:
    red, green, blue = values
    return red, green, blue


_VOCABULARY = _vocabulary()
_TABLE: tuple[_Category, ...] = tuple(
    _Category(
        c["name"],
        tuple(c["subcategories"]),
        tuple(c["words"]),
        (c["price"][0], c["price"][1]),
        Look(
            _rgb(c["background"]),
            (_rgb(c["foreground"][0]), _rgb(c["foreground"][1])),
            c["shape"],
            c["texture"],
        ),
    )
    for c in _VOCABULARY["category"]
)
DEMO_CATEGORIES: tuple[str, ...] = tuple(c.name for c in _TABLE)
_SHARED_WORDS: dict[str, tuple[int, ...]] = {
    word: tuple(owners) for word, owners in _VOCABULARY["shared_words"].items()
}
_FILLER: tuple[str, ...] = tuple(_VOCABULARY["filler"])
_TITLE_ADJECTIVES: tuple[str, ...] = tuple(_VOCABULARY["title_adjectives"])
_PLACES: tuple[tuple[str, str], ...] = tuple(
    (town, county) for town, county in _VOCABULARY["places"]
)

_INCHES = (5, 7, 10, 13, 15, 24, 27, 32, 42, 55)
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
    backgrounds = tuple(c.look.background for c in _TABLE)  # what a swapped background is
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


def _category_words(index: int) -> tuple[str, ...]:
    shared = tuple(w for w, owners in _SHARED_WORDS.items() if index in owners)
    return _TABLE[index].words + shared


def _plan_products(rnd: random.Random, per_category: int, hard_fraction: float) -> list[_Product]:
    """Labelled listings in shuffled order, roles assigned, plus the unlabelled one."""
    labels = [c for c in range(len(_TABLE)) for _ in range(per_category)]
    rnd.shuffle(labels)
    roles = _assign_roles(rnd, len(labels), hard_fraction)
    products = [_make_product(rnd, label, roles.get(i, ())) for i, label in enumerate(labels)]
    unlabelled = _make_product(rnd, rnd.randrange(len(_TABLE)), ())
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
    category = _TABLE[label]
    other = rnd.choice([c for c in range(len(_TABLE)) if c != label])
    text_source = other if "text_hard" in roles else label
    look = _TABLE[other].look if "image_hard" in roles else category.look
    title = _title(rnd, _category_words(text_source))
    description = _description(rnd, label, other if "text_hard" in roles else None)
    if "cr_bare" in roles:
        description = _with_carriage_return(rnd, description, quoted=False)
    elif "cr_quoted" in roles:
        description = _with_carriage_return(rnd, description, quoted=True)
    town, county = rnd.choice(_PLACES)
    # Most real titles name town and county; a few name the town only.
    where = f"{town}, {county}" if rnd.random() < 0.9 else town
    return _Product(
        id=_uuid(rnd),
        path=f"{category.name} / {rnd.choice(category.subcategories)}",
        name=f"{title} | in {where} | Gumtree",
        description=description,
        price=_price(rnd, *category.price),
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


def _title(rnd: random.Random, words: Sequence[str]) -> str:
    nouns = [w.capitalize() for w in rnd.sample(words, rnd.randint(1, 2))]
    if rnd.random() < 0.5:
        nouns.insert(0, rnd.choice(_TITLE_ADJECTIVES))
    return " ".join(nouns)


def _description(rnd: random.Random, label: int, other: int | None) -> str:
    """10-40 words: own vocabulary mixed with filler; a text-hard one uses `other`'s instead."""
    if other is None:
        pools, weights = (_category_words(label), _FILLER), (0.45, 0.55)
    else:
        pools, weights = (_category_words(other), _FILLER), (0.3, 0.7)
    words = [rnd.choice(rnd.choices(pools, weights)[0]) for _ in range(rnd.randint(10, 40))]
    words = [
        f'{rnd.choice(_INCHES)}" {w}' if w == "screen" and rnd.random() < 0.5 else w for w in words
    ]
    return _sentences(rnd, words)


def _sentences(rnd: random.Random, words: list[str]) -> str:
    """Group words into sentences; some are glued with no space, as where sellers' line
    breaks were lost (`working orderCollection only`)."""
    text, i = "", 0
    while i < len(words):
        n = rnd.randint(4, 9)
        chunk = [w + ("," if rnd.random() < 0.08 else "") for w in words[i : i + n]]
        sentence = " ".join(chunk).rstrip(",")
        sentence = sentence[0].upper() + sentence[1:]
        if text:
            text += "" if rnd.random() < 0.25 else ". "
        text += sentence
        i += n
    return text


def _with_carriage_return(rnd: random.Random, description: str, quoted: bool) -> str:
    """Put bare `\\r` between words, as the real data's lost line breaks do. A field with no
    comma or quote is written unquoted, the harder case for a parser."""
    if quoted:
        description = description.replace(" ", ", ", 1) if "," not in description else description
    else:
        description = description.replace(",", "").replace('"', "")
    words = description.split(" ")
    for _ in range(rnd.randint(1, 3)):
        k = rnd.randrange(1, len(words))
        words[k] = "\r" + words[k][:1].upper() + words[k][1:]
    return " ".join(words).replace(" \r", "\r")


def _price(rnd: random.Random, low: float, high: float) -> str:
    # Log-uniform: cheap listings are common, expensive ones rare, as on the real marketplace.
    value = math.exp(rnd.uniform(math.log(low), math.log(high)))
    pence = rnd.choice((0.0, 0.0, 0.0, 0.5, 0.99))
    return f"£{math.floor(value) + pence:,.2f}"


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
