"""A photo as the image model's input, shared by data preparation, training and serving.

Every side goes through `decode_image` (`fbmr.core.decode`: bytes in, upright RGB out, whatever
the file name says) and `image_pixels` (square, resize, centre crop: CHW uint8), so a photo gives
byte-identical model inputs in training, at the facade and in the client. What is served is
those pixels: the exported image encoder normalises them itself (`normalize_pixels`, in the
graph), so a request carries one byte per value instead of four. Training reads
`preprocess_image`, which is exactly `normalize_pixels(image_pixels(...))`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fbmr.core import decode
from fbmr.core.contract import DEFAULT_MAX_PIXELS
from fbmr.core.decode import ImageSource, PixelBudget, decode_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The cleaned seed photos are padded with black; padding at serving time must match.
PAD_COLOUR = (0, 0, 0)


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
        crop: float = 224 / 256,
    ) -> ImageSpec:
        """The spec for a crop size whose crop keeps `crop` of the resized side (ImageNet's
        224 of 256 by default; 1: the whole photo), with the normalisation the trunk's
        pretrained weights expect."""
        return cls(image_size, round(image_size / crop), mean, std)

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
    still covers the resize (`fbmr.core.decode.draft`); with a `budget`, its decoding waits for
    room in it."""
    spec = spec or ImageSpec()
    size = decode.webp_size(source) if isinstance(source, bytes | bytearray | memoryview) else None
    if size is not None:
        # a WebP's decoder allocates its canvases as the file is opened: held from there on
        decode.within_limit(*size, max_pixels)
        with _held(budget, max(size) ** 2, max_pixels):
            return _square_crop(decode.decoded(decode.opened(source, max_pixels)), spec, max_pixels)
    opened = decode.opened(source, max_pixels)
    decode.draft(opened, spec.resize_size)
    # what is decoded (after the draft), padded square: the largest image this photo becomes
    with _held(budget, max(opened.size) ** 2, max_pixels):
        return _square_crop(decode.decoded(opened), spec, max_pixels)


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
