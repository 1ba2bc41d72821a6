"""Decoding's memory savers give the same photo: conversions a band of rows at a time equal the
whole-image conversion they replace, and a WebP's size is read from its header, so one over the
limit is refused before its decoder is made."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fbmr.core import decode
from fbmr.core.decode import ImageTooLargeError, decode_image, webp_size
from fbmr.core.image import image_pixels
from tests.helpers import encode

RNG = np.random.default_rng(0)


def _whole(image: Image.Image) -> np.ndarray:
    """The conversion to upright RGB as written for the whole image at once."""
    if image.mode in ("I", "I;16"):
        wide = np.asarray(image, dtype=np.int64) >> 8
        image = Image.fromarray(wide.clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"))


def _palette_with_transparency() -> Image.Image:
    image = Image.fromarray(RNG.integers(0, 256, (301, 257), dtype=np.uint8), "P")
    image.putpalette([int(v) for v in RNG.integers(0, 256, 768)])
    image.info["transparency"] = 5
    return image


CASES = {
    "rgba": lambda: Image.fromarray(RNG.integers(0, 256, (301, 257, 4), dtype=np.uint8), "RGBA"),
    "la": lambda: Image.fromarray(RNG.integers(0, 256, (301, 257, 2), dtype=np.uint8), "LA"),
    "palette-transparent": _palette_with_transparency,
    "16-bit": lambda: Image.fromarray(RNG.integers(0, 65536, (301, 257), dtype=np.uint16)),
    "32-bit": lambda: Image.fromarray(
        RNG.integers(-5_000, 200_000, (301, 257), dtype=np.int32), "I"
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_a_conversion_in_bands_gives_the_whole_image_s_pixels(name, monkeypatch):
    image = CASES[name]()
    monkeypatch.setattr(decode, "BAND_PIXELS", 1000)  # bands of 3 rows, the last shorter
    banded = np.asarray(decode_image(image))
    assert banded.shape == (301, 257, 3)
    np.testing.assert_array_equal(banded, _whole(image))


@pytest.mark.parametrize("params", [{"quality": 50}, {"lossless": True}], ids=["lossy", "lossless"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (123, 45), (16383, 3)])
def test_a_webp_s_size_is_read_from_its_header(params, mode, size):
    assert webp_size(encode(Image.new(mode, size), "WEBP", **params)) == size


def test_no_size_is_read_from_what_is_not_a_webp():
    assert webp_size(encode(Image.new("RGB", (9, 9)), "PNG")) is None
    assert webp_size(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert webp_size(b"RIFF") is None


def test_a_webp_over_the_limit_is_refused_before_it_is_opened(monkeypatch):
    data = encode(Image.new("RGB", (300, 200)), "WEBP")

    def never(*args, **kwargs):
        raise AssertionError("opened")

    monkeypatch.setattr(Image, "open", never)
    for read in (decode_image, image_pixels):
        with pytest.raises(ImageTooLargeError, match="300x200"):
            read(data, max_pixels=59_999)
