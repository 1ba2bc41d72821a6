"""The demo's photos: a category's look (palette, shape, texture) painted with noise, clutter and
lighting that blur it, then written as a seller's photo of one kind (a square JPEG, a wide one,
one EXIF-rotated, PNG bytes under `.jpg`, a corrupt file, or none at all).

Every random draw comes from the generator passed in, in a fixed order, so the same seed paints
byte-identical photos (`fbmr.training.data.demo` plans which photo of which look).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fbmr.training.data.demo_patterns import RGB, SHAPES, TEXTURES, Pixels, distractors

_JPEG_QUALITY = 90
# Share of photos whose background comes from another category: colour is a strong clue, but
# the shape must carry the rest, as in real photos where backgrounds are shared.
_BACKGROUND_SWAP = 0.1


@dataclass(frozen=True)
class Look:
    """A category's visual signature."""

    background: RGB
    foreground: tuple[RGB, RGB]
    shape: str
    texture: str


def write_photo(
    path: Path,
    kind: str,
    look: Look,
    size: int,
    rng: np.random.Generator,
    backgrounds: Sequence[RGB],
) -> None:
    """The photo of `kind` with `look` at `path` (nothing for "missing"); `backgrounds`: the
    backgrounds a swapped one is drawn from, every category's."""
    if kind == "missing":
        return  # listed in Images.csv, absent from images/
    if kind in ("wide", "exif"):
        # Not padded: these exercise the loader's own padding to a square.
        image = _render(look, rng, round(1.5 * size), size, backgrounds)
    else:
        image = _framed(look, rng, size, backgrounds)
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, format="PNG")
    elif kind == "exif":
        # Pixels stored rotated so that applying orientation 6 (90° clockwise) shows them upright.
        exif = Image.Exif()
        exif[0x0112] = 6
        stored = image.transpose(Image.Transpose.ROTATE_90)
        stored.save(buffer, format="JPEG", quality=_JPEG_QUALITY, exif=exif)
    else:
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    data = buffer.getvalue()
    path.write_bytes(data[:200] if kind == "corrupt" else data)


def _framed(
    look: Look, rng: np.random.Generator, size: int, backgrounds: Sequence[RGB]
) -> Image.Image:
    """A photo of random aspect ratio padded with black to a square, like the cleaned seed."""
    ratio = 1.0 if rng.random() < 0.4 else rng.uniform(0.7, 0.95)
    short = round(size * ratio)
    width, height = (size, short) if rng.random() < 0.5 else (short, size)
    canvas = Image.new("RGB", (size, size))
    photo = _render(look, rng, width, height, backgrounds)
    canvas.paste(photo, ((size - width) // 2, (size - height) // 2))
    return canvas


def _render(
    look: Look, rng: np.random.Generator, width: int, height: int, backgrounds: Sequence[RGB]
) -> Image.Image:
    # One lighting shift for the whole photo, plus a little per-colour jitter.
    shift = rng.integers(-15, 16, 3)
    background = look.background
    if rng.random() < _BACKGROUND_SWAP:
        background = backgrounds[int(rng.integers(len(backgrounds)))]
    image = Image.new("RGB", (width, height), _jitter(rng, background, shift))
    draw = ImageDraw.Draw(image)
    SHAPES[look.shape](draw, rng, width, height, [_jitter(rng, c, shift) for c in look.foreground])
    distractors(draw, rng, width, height)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = TEXTURES[look.texture](pixels, rng)
    pixels += 5.0 * rng.standard_normal(pixels.shape, dtype=np.float32)  # sensor noise, always
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jitter(rng: np.random.Generator, colour: RGB, shift: Pixels) -> RGB:
    r, g, b = np.clip(np.array(colour) + shift + rng.integers(-10, 11, 3), 0, 255)
    return int(r), int(g), int(b)
