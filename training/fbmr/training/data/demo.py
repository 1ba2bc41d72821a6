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
and the towns are data, in `demo_vocabulary.toml` beside this module.
"""

import io
import math
import random
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from fbmr.core.datasets import PHOTOS, SEED_IMAGES, SEED_PRODUCTS, photo_file
from fbmr.training.data.settings import DemoSettings

RGB = tuple[int, int, int]
Pixels = np.ndarray[Any, np.dtype[Any]]  # a photo's (height, width, 3) values, as floats


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo` wrote."""

    out: Path
    products: int
    images: int
    seconds: float


@dataclass(frozen=True)
class _Look:
    """A category's visual signature."""

    background: RGB
    foreground: tuple[RGB, RGB]
    shape: str
    texture: str


@dataclass(frozen=True)
class _Category:
    name: str
    subcategories: tuple[str, ...]
    words: tuple[str, ...]
    price: tuple[float, float]
    look: _Look


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
        _Look(
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
_JPEG_QUALITY = 90
# Share of photos whose background comes from another category: colour is a strong clue, but
# the shape must carry the rest, as in real photos where backgrounds are shared.
_BACKGROUND_SWAP = 0.1
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
    look: _Look
    roles: tuple[str, ...]
    photo_kinds: list[str]


@dataclass(frozen=True)
class _Photo:
    id: str
    product_id: str
    kind: str
    look: _Look
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
    for photo in tqdm(photos, desc="demo photos", unit="photo", disable=not progress):
        _write_photo(out / photo_file(photo.id), photo, image_size, pixels)
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


# --- photos -------------------------------------------------------------------------------

Colours = Sequence[RGB]
Draw = ImageDraw.ImageDraw
Rng = np.random.Generator
# paints a shape's copies on a photo of the given width and height, in the given colours
_Drawer = Callable[[Draw, Rng, int, int, Colours], None]


def _write_photo(path: Path, photo: _Photo, size: int, rng: np.random.Generator) -> None:
    if photo.kind == "missing":
        return  # listed in Images.csv, absent from images/
    if photo.kind in ("wide", "exif"):
        # Not padded: these exercise the loader's own padding to a square.
        image = _render(photo.look, rng, round(1.5 * size), size)
    else:
        image = _framed(photo.look, rng, size)
    buffer = io.BytesIO()
    if photo.kind == "png":
        image.save(buffer, format="PNG")
    elif photo.kind == "exif":
        # Pixels stored rotated so that applying orientation 6 (90° clockwise) shows them upright.
        exif = Image.Exif()
        exif[0x0112] = 6
        stored = image.transpose(Image.Transpose.ROTATE_90)
        stored.save(buffer, format="JPEG", quality=_JPEG_QUALITY, exif=exif)
    else:
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    data = buffer.getvalue()
    path.write_bytes(data[:200] if photo.kind == "corrupt" else data)


def _framed(look: _Look, rng: np.random.Generator, size: int) -> Image.Image:
    """A photo of random aspect ratio padded with black to a square, like the cleaned seed."""
    ratio = 1.0 if rng.random() < 0.4 else rng.uniform(0.7, 0.95)
    short = round(size * ratio)
    width, height = (size, short) if rng.random() < 0.5 else (short, size)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(_render(look, rng, width, height), ((size - width) // 2, (size - height) // 2))
    return canvas


def _render(look: _Look, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    # One lighting shift for the whole photo, plus a little per-colour jitter.
    shift = rng.integers(-15, 16, 3)
    background = look.background
    if rng.random() < _BACKGROUND_SWAP:
        background = _TABLE[int(rng.integers(len(_TABLE)))].look.background
    image = Image.new("RGB", (width, height), _jitter(rng, background, shift))
    draw = ImageDraw.Draw(image)
    _SHAPES[look.shape](draw, rng, width, height, [_jitter(rng, c, shift) for c in look.foreground])
    _distractors(draw, rng, width, height)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = _TEXTURES[look.texture](pixels, rng)
    pixels += 5.0 * rng.standard_normal(pixels.shape, dtype=np.float32)  # sensor noise, always
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jitter(rng: np.random.Generator, colour: RGB, shift: Pixels) -> RGB:
    r, g, b = np.clip(np.array(colour) + shift + rng.integers(-10, 11, 3), 0, 255)
    return int(r), int(g), int(b)


def _pick(rng: np.random.Generator, colours: Sequence[RGB]) -> RGB:
    return colours[int(rng.integers(len(colours)))]


def _rotated(
    cx: float, cy: float, points: Sequence[tuple[float, float]], angle: float
) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _radial(radii: Sequence[float]) -> list[tuple[float, float]]:
    """Evenly spaced vertices at the given distances from the centre."""
    step = 2 * math.pi / len(radii)
    return [(r * math.cos(k * step), r * math.sin(k * step)) for k, r in enumerate(radii)]


def _scattered(
    rng: np.random.Generator,
    width: int,
    height: int,
    count: tuple[int, int],
    scale: tuple[float, float],
) -> list[tuple[float, float, float, float]]:
    """Random (x, y, radius, angle) placements."""
    m = min(width, height)
    return [
        (
            rng.uniform(0, width),
            rng.uniform(0, height),
            m * rng.uniform(*scale),
            rng.uniform(0, 2 * math.pi),
        )
        for _ in range(int(rng.integers(*count)))
    ]


def _polygons(sides: int) -> _Drawer:
    def draw_polygons(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
        for x, y, r, angle in _scattered(rng, width, height, (3, 6), (0.1, 0.25)):
            draw.polygon(_rotated(x, y, _radial([r] * sides), angle), fill=_pick(rng, colours))

    return draw_polygons


def _circles(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, _ in _scattered(rng, width, height, (3, 7), (0.08, 0.22)):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_pick(rng, colours))


def _rings(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, _ in _scattered(rng, width, height, (2, 5), (0.15, 0.3)):
        thickness = max(2, round(r * rng.uniform(0.15, 0.3)))
        draw.ellipse((x - r, y - r, x + r, y + r), outline=_pick(rng, colours), width=thickness)


def _crosses(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, angle in _scattered(rng, width, height, (2, 5), (0.12, 0.25)):
        a = r * 0.3
        arm = [(a, -a), (a, -r), (-a, -r), (-a, -a), (-r, -a), (-r, a),
               (-a, a), (-a, r), (a, r), (a, a), (r, a), (r, -a)]  # fmt: skip
        draw.polygon(_rotated(x, y, arm, angle), fill=_pick(rng, colours))


def _star(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, angle in _scattered(rng, width, height, (1, 3), (0.22, 0.4)):
        points = _radial([r, r * 0.4] * 5)
        draw.polygon(_rotated(x, y, points, angle), fill=_pick(rng, colours))


def _ellipses(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, angle in _scattered(rng, width, height, (1, 4), (0.2, 0.4)):
        squash = rng.uniform(0.35, 0.6)
        outline = [(r * math.cos(t), squash * r * math.sin(t)) for t in np.linspace(0, 6.28, 36)]
        draw.polygon(_rotated(x, y, outline, angle), fill=_pick(rng, colours))


def _stripes(
    angles: tuple[float, ...], period: tuple[float, float], fill: tuple[float, float]
) -> _Drawer:
    """Parallel lines at one of `angles` degrees (± jitter), alternating the two colours."""

    def draw_stripes(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
        step = min(width, height) * rng.uniform(*period)
        thickness = max(1, round(step * rng.uniform(*fill)))
        tilt = math.radians(rng.choice(angles) + rng.uniform(-12, 12))
        dx, dy = math.cos(tilt), math.sin(tilt)
        reach = math.hypot(width, height)
        offset = rng.uniform(0, step)
        lines = int(reach / step) + 1
        for k in range(-lines, lines + 1):
            cx = width / 2 - dy * (k * step + offset)
            cy = height / 2 + dx * (k * step + offset)
            ends = [(cx - dx * reach, cy - dy * reach), (cx + dx * reach, cy + dy * reach)]
            draw.line(ends, fill=colours[k % 2], width=thickness)

    return draw_stripes


def _checkerboard(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    cell = min(width, height) * rng.uniform(0.08, 0.16)
    x0, y0 = width * rng.uniform(0, 0.3), height * rng.uniform(0, 0.3)
    x1, y1 = width * rng.uniform(0.7, 1), height * rng.uniform(0.7, 1)
    for i in range(int((x1 - x0) / cell) + 1):
        for j in range(int((y1 - y0) / cell) + 1):
            left, top = x0 + i * cell, y0 + j * cell
            draw.rectangle((left, top, left + cell, top + cell), fill=colours[(i + j) % 2])


def _dots(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    spacing = min(width, height) * rng.uniform(0.1, 0.18)
    r = spacing * rng.uniform(0.2, 0.35)
    ox, oy = rng.uniform(0, spacing, 2)
    for j in range(int(height / spacing) + 1):
        for i in range(int(width / spacing) + 1):
            x, y = ox + i * spacing, oy + j * spacing
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colours[j % 2])


def _concentric(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    x, y = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    angle = rng.uniform(-0.3, 0.3)
    step = min(width, height) * rng.uniform(0.06, 0.1)
    rings = int(rng.integers(3, 7))
    for k in range(rings, 0, -1):  # largest first, so each smaller square stays visible
        half = k * step
        square = [(-half, -half), (half, -half), (half, half), (-half, half)]
        draw.polygon(_rotated(x, y, square, angle), fill=colours[k % 2])


_SHAPES: dict[str, _Drawer] = {
    "circles": _circles,
    "squares": _polygons(4),
    "triangles": _polygons(3),
    "hstripes": _stripes((0,), (0.15, 0.3), (0.35, 0.6)),
    "vstripes": _stripes((90,), (0.15, 0.3), (0.35, 0.6)),
    "diagonals": _stripes((45, 135), (0.07, 0.12), (0.15, 0.3)),
    "checkerboard": _checkerboard,
    "rings": _rings,
    "crosses": _crosses,
    "dots": _dots,
    "star": _star,
    "ellipse": _ellipses,
    "concentric": _concentric,
}


def _distractors(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int
) -> None:
    """Small shapes of any colour, as the clutter around a real listed item."""
    for x, y, r, _ in _scattered(rng, width, height, (2, 5), (0.03, 0.09)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r / 2, x + r, y + r / 2), fill=colour)


def _grain(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    return np.asarray(pixels + 14.0 * rng.standard_normal(pixels.shape, dtype=np.float32))


def _blotchy(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    height, width, _ = pixels.shape
    cells = rng.normal(0.0, 22.0, (6, 6, 1))
    rows, columns = np.arange(height) * 6 // height, np.arange(width) * 6 // width
    return np.asarray(pixels + cells[rows][:, columns])


def _scanlines(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    period = int(rng.integers(2, 5))
    dark = (np.arange(pixels.shape[0]) % period == 0)[:, None, None]
    return np.asarray(pixels * np.where(dark, 0.72, 1.0))


def _vignette(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    height, width, _ = pixels.shape
    yy, xx = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    strength = rng.uniform(0.2, 0.35)
    return np.asarray(pixels * (1.0 - strength * (xx**2 + yy**2))[..., None])


def _gradient(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    height, width, _ = pixels.shape
    yy, xx = np.mgrid[0 : 1 : height * 1j, 0 : 1 : width * 1j]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = math.cos(angle) * xx + math.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return np.asarray(pixels * (0.75 + 0.4 * ramp)[..., None])


_TEXTURES: dict[str, Callable[[Pixels, np.random.Generator], Pixels]] = {
    "grain": _grain,
    "blotchy": _blotchy,
    "scanlines": _scanlines,
    "vignette": _vignette,
    "gradient": _gradient,
}
