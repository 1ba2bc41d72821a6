"""Photo decoding, shared by data preparation, training, the facade and the client: bytes in,
an upright RGB image out, whatever the file name says (`decode_image`). Only the formats phones
and browsers send are decoded (ACCEPTED_FORMATS), a photo over the pixel limit is refused before
it is decoded, a large JPEG is decoded at a reduced scale that still covers the resize (`draft`),
and `PixelBudget` bounds the pixels being decoded at once across threads. What a photo becomes
as the model's input is `fbmr.core.image`."""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from fbmr.core.contract import DEFAULT_MAX_PIXELS

# What photos come in from phones and browsers; Pillow's other decoders (TIFF, PSD, EPS, ICO, ...)
# are never run on uploaded bytes. JPEG includes MPO, as some cameras write.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ACCEPTED = "JPEG, PNG, WebP, GIF or BMP"
# Formats people send that are not accepted, by their first bytes, so the refusal can name them.
_KNOWN_UNSUPPORTED = (
    (re.compile(rb"^....ftyp(heic|heix|hevc|heim|heis|mif1|msf1)", re.S), "HEIC/HEIF"),
    (re.compile(rb"^....ftyp(avif|avis)", re.S), "AVIF"),
    (re.compile(rb"^%PDF-"), "PDF"),
    (re.compile(rb"^\s*<(\?xml|!doctype svg|svg)", re.I), "SVG"),
    (re.compile(rb"^(II\*\x00|MM\x00\*)"), "TIFF"),
    (re.compile(rb"^8BPS"), "PSD"),
)


def unsupported_format(head: bytes) -> str | None:
    """The name of a known image format that is not accepted, from a file's first bytes."""
    for pattern, name in _KNOWN_UNSUPPORTED:
        if pattern.match(head):
            return name
    return None


class ImageDecodeError(ValueError):
    """A photo that cannot be used: not an image, corrupt, truncated or too large."""


class ImageTooLargeError(ImageDecodeError):
    """A photo over the pixel limit (a decompression bomb, or simply too big to process)."""


ImageSource = bytes | bytearray | memoryview | BinaryIO | str | Path | Image.Image


def decode_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB image from encoded bytes, a file or a PIL image.

    The format is read from the content, never from a file name, so a PNG saved as `.jpg` decodes.
    EXIF orientation is applied, and transparency is flattened onto white (a product cut out on
    a transparent background reads as a product on white, as sellers see it). Encoded photos
    must be in one of ACCEPTED_FORMATS; an animated one gives its first frame.
    Raises ImageDecodeError for anything that is not a usable image.
    """
    return decoded(opened(source, max_pixels))


def opened(source: ImageSource, max_pixels: int) -> Image.Image:
    """The photo opened but not decoded yet (its header read, its size within `max_pixels`)."""
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes | bytearray | memoryview):
            # Pillow's WebP decoder allocates its canvases as the file is opened: refused first
            if (size := webp_size(source)) is not None:
                within_limit(*size, max_pixels)
            source = io.BytesIO(source)
        try:
            with warnings.catch_warnings():
                # Pillow only warns between its own limit and twice it; we enforce ours below.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source, formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError:
            raise ImageDecodeError(_unreadable(source)) from None
        except Image.DecompressionBombError as err:
            raise ImageTooLargeError(f"image too large: {err}") from None
        except OSError as err:
            raise ImageDecodeError(f"cannot read image: {err}") from None
    within_limit(*image.size, max_pixels)
    return image


def within_limit(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image too large: {width}x{height} = {width * height} pixels, limit {max_pixels}"
        )


def webp_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """A WebP's width and height from its first 30 bytes (the first chunk's header: lossy VP8,
    lossless VP8L or extended VP8X); None for anything else. Pillow's WebP decoder allocates
    two canvases of the full size as the file is opened, before its size can be checked."""
    head = bytes(data[:30])
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(head[26:28], "little") & 0x3FFF,
            int.from_bytes(head[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def decoded(image: Image.Image) -> Image.Image:
    """An opened photo decoded, upright and RGB."""
    try:
        image.load()
        # only when it turns the photo: exif_transpose copies it even when nothing is to be done
        # (a quarter of a gigabyte for a 64-megapixel photo)
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from None
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit greyscale: Pillow's conversion to RGB clips at 255, which turns a photo white
        return _banded(image, _high_byte)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _banded(image, _on_white)
    return image if image.mode == "RGB" else image.convert("RGB")


# Conversions that need intermediate images go a band of rows at a time, of about this many pixels:
# a 64-megapixel photo with transparency would otherwise take four more images of its size.
BAND_PIXELS = 1 << 20


def _banded(image: Image.Image, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """`image` as RGB, `convert` (any band of rows to RGB, each pixel on its own) applied a band
    at a time: the same pixels as converting it whole, with only the RGB result beside it."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // width)
    out = Image.new("RGB", image.size)
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height)))
        out.paste(convert(band), (0, top))
    return out


def _high_byte(band: Image.Image) -> Image.Image:
    """16-bit (or 32-bit) greyscale as RGB, by its high byte (0-255 from 0-65535)."""
    wide = np.asarray(band, dtype=np.int64) >> 8
    return Image.fromarray(wide.clip(0, 255).astype(np.uint8), "L").convert("RGB")


def _on_white(band: Image.Image) -> Image.Image:
    """Transparency flattened onto white, as RGB."""
    rgba = band.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


# A JPEG is decoded at the smallest reduced scale that still covers the size it is resized to.
# The JPEG decoder's own scaling averages each block, so the resize after it has little left to
# do: on the real sample's val and test photos sent as 512- and 1,024-px JPEGs, decoding at the
# served size (1) gave inputs nearer the photos the model was trained on than decoding at twice
# it (2) did (1.2 against 2.3 grey levels apart on average), top-1 no lower (0.589 against 0.581
# on val at 512 px), in half the time (bench/draft_accuracy.py; docs/results.md).
DRAFT_MARGIN = 1


def draft(image: Image.Image, side: int) -> None:
    """Have a JPEG decode at the smallest of 1/2, 1/4 or 1/8 scale whose longer side is still at
    least DRAFT_MARGIN x `side` (JPEG's own DCT scaling, in its decoder): a 4,000-px phone photo
    served at 256 px then decodes 1/16 of the pixels, in a fraction of the time and memory.
    Other formats, and JPEGs already near that size, decode as they are."""
    width, height = image.size
    scale = DRAFT_MARGIN * side / max(width, height)
    if image.format in ("JPEG", "MPO") and scale <= 0.5:
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


class PixelBudget:
    """At most `pixels` pixels of photos being decoded at once, across threads: a decoded photo
    takes 3 to 4 bytes a pixel, so this bounds a process's decoding memory whatever arrives at
    once (four 64-megapixel PNGs decode one after another, not side by side). A photo larger
    than the whole budget decodes alone."""

    def __init__(self, pixels: int) -> None:
        if pixels < 1:
            raise ValueError(f"a pixel budget must be positive, got {pixels}")
        self.limit, self.held = pixels, 0
        self._turn = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until `pixels` fit in the budget, and hold them for the block."""
        pixels = min(pixels, self.limit)
        with self._turn:
            self._turn.wait_for(lambda: self.held + pixels <= self.limit)
            self.held += pixels
        try:
            yield
        finally:
            with self._turn:
                self.held -= pixels
                self._turn.notify_all()


def _unreadable(source: BinaryIO | str | Path) -> str:
    """Why a photo could not be opened, saying which formats are accepted."""
    try:
        if isinstance(source, str | Path):
            with open(source, "rb") as file:
                head = file.read(512)
        else:
            source.seek(0)
            head = source.read(512)
    except OSError:
        head = b""
    name = unsupported_format(head)
    if name is not None:
        return f"{name} is not a supported photo format; send {ACCEPTED}"
    return f"not an image, or an image format that is not supported; send {ACCEPTED}"
