"""Photo decoding and the image model's input, shared by data preparation, training and serving.

Every side goes through `decode_image` (bytes in, upright RGB out, whatever the file name says)
and `image_pixels` (square, resize, centre crop: CHW uint8), so a photo gives byte-identical
model inputs in training, at the facade and in the client. What is served is those pixels: the
exported image encoder normalises them itself (`normalize_pixels`, in the graph), so a request
carries one byte per value instead of four. Training reads `preprocess_image`, which is exactly
`normalize_pixels(image_pixels(...))`.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from fbmr.core.contract import DEFAULT_MAX_PIXELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The cleaned seed photos are padded with black; padding at serving time must match.
PAD_COLOUR = (0, 0, 0)

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


@dataclass(frozen=True)
class ImageSpec:
    """How a square photo becomes the image model's input.

    The photo is resized to `resize_size` and centre-cropped to `image_size`, the usual ImageNet
    ratio (256 -> 224), then normalised with `mean` and `std`.
    """

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size ({self.resize_size}) must be at least image_size ({self.image_size})"
            )

    @classmethod
    def for_image_size(
        cls,
        image_size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> ImageSpec:
        """The spec for a crop size, keeping the 256/224 resize ratio, with the normalisation
        the trunk's pretrained weights expect."""
        return cls(image_size, round(image_size * 256 / 224), mean, std)

    def to_dict(self) -> dict[str, object]:
        return {
            "image_size": self.image_size,
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        mean, std = (tuple(float(v) for v in data[key]) for key in ("mean", "std"))
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        return cls(
            image_size=int(data["image_size"]),
            resize_size=int(data["resize_size"]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
        )


ImageSource = bytes | bytearray | memoryview | BinaryIO | str | Path | Image.Image


def decode_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB image from encoded bytes, a file or a PIL image.

    The format is read from the content, never from a file name, so a PNG saved as `.jpg` decodes.
    EXIF orientation is applied, and transparency is flattened onto white (a product cut out on
    a transparent background reads as a product on white, as sellers see it). Encoded photos
    must be in one of ACCEPTED_FORMATS; an animated one gives its first frame.
    Raises ImageDecodeError for anything that is not a usable image.
    """
    return _decoded(_opened(source, max_pixels))


def _opened(source: ImageSource, max_pixels: int) -> Image.Image:
    """The photo opened but not decoded yet (its header read, its size within `max_pixels`)."""
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes | bytearray | memoryview):
            # Pillow's WebP decoder allocates its canvases as the file is opened: refused first
            if (size := webp_size(source)) is not None:
                _within_limit(*size, max_pixels)
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
    _within_limit(*image.size, max_pixels)
    return image


def _within_limit(width: int, height: int, max_pixels: int) -> None:
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


def _decoded(image: Image.Image) -> Image.Image:
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


# A JPEG is decoded at a reduced scale only down to twice the size it is resized to: the resize
# then still averages over several decoded pixels, and the padding's rounding at the reduced
# scale moves the photo by at most a quarter of a served pixel.
DRAFT_MARGIN = 2


def _draft(image: Image.Image, side: int) -> None:
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


def pad_to_square(image: Image.Image) -> Image.Image:
    """The image centred on a black square whose side is its longer side, as the seed photos are."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def square_photo(
    source: ImageSource, size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """A photo as data preparation stores it: decoded, upright, padded square, `size` pixels."""
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    image = pad_to_square(decode_image(source, max_pixels))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def to_chw(image: Image.Image) -> NDArray[np.uint8]:
    """An RGB image as a CHW uint8 array."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))


def normalize_pixels(pixels: NDArray[np.uint8], spec: ImageSpec) -> NDArray[np.float32]:
    """CHW (or NCHW) uint8 pixels scaled to [0, 1] and normalised, as float32.

    The exported image encoder computes the same, in the same order and precision, inside its
    graph (`fbmr.export`), so served and trained inputs match.
    """
    shape = (3, 1, 1)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(spec.std, dtype=np.float32).reshape(shape)
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((scaled - mean) / std)


def normalize(image: Image.Image, spec: ImageSpec) -> NDArray[np.float32]:
    """An RGB image of any size as a CHW float32 array, scaled to [0, 1] and normalised."""
    return normalize_pixels(to_chw(image), spec)


def image_pixels(
    source: ImageSource,
    spec: ImageSpec | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: PixelBudget | None = None,
) -> NDArray[np.uint8]:
    """A photo as the served image models take it: (3, image_size, image_size) uint8 pixels,
    padded square, resized and centre-cropped. A large JPEG is decoded at a reduced scale that
    still covers the resize (`_draft`); with a `budget`, its decoding waits for room in it."""
    spec = spec or ImageSpec()
    size = webp_size(source) if isinstance(source, bytes | bytearray | memoryview) else None
    if size is not None:
        # a WebP's decoder allocates its canvases as the file is opened: held from there on
        _within_limit(*size, max_pixels)
        with _held(budget, max(size) ** 2, max_pixels):
            return _square_crop(_decoded(_opened(source, max_pixels)), spec, max_pixels)
    opened = _opened(source, max_pixels)
    _draft(opened, spec.resize_size)
    # what is decoded (after the draft), padded square: the largest image this photo becomes
    with _held(budget, max(opened.size) ** 2, max_pixels):
        return _square_crop(_decoded(opened), spec, max_pixels)


def _held(
    budget: PixelBudget | None, pixels: int, max_pixels: int
) -> contextlib.AbstractContextManager[None]:
    """`pixels` (at most `max_pixels`) held in `budget` for a block; nothing without one."""
    return budget.hold(min(pixels, max_pixels)) if budget else contextlib.nullcontext()


def _square_crop(image: Image.Image, spec: ImageSpec, max_pixels: int) -> NDArray[np.uint8]:
    """A decoded photo padded square, resized and centre-cropped to `spec`, as CHW uint8."""
    side = max(image.size)
    if side * side > max_pixels:
        # The padded square obeys the pixel limit too: a long strip (a 6 KB PNG of 2,000,000 x 1
        # pixels) would otherwise ask for a canvas of terabytes. Shrink it to the served size
        # first; photos whose square is within the limit are not affected.
        width, height = image.size
        scale = spec.resize_size / side
        shrunk = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(shrunk, Image.Resampling.BILINEAR)
    image = pad_to_square(image)
    image = image.resize((spec.resize_size, spec.resize_size), Image.Resampling.BILINEAR)
    offset = (spec.resize_size - spec.image_size) // 2
    image = image.crop((offset, offset, offset + spec.image_size, offset + spec.image_size))
    return to_chw(image)


def preprocess_image(
    source: ImageSource, spec: ImageSpec | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> NDArray[np.float32]:
    """A photo as the PyTorch image model's input: (3, image_size, image_size) float32,
    normalised; exactly what the served encoder computes from `image_pixels`."""
    spec = spec or ImageSpec()
    return normalize_pixels(image_pixels(source, spec, max_pixels), spec)
