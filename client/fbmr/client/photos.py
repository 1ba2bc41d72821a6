"""A photo as bytes, whatever the caller holds: a path, an fsspec URL, bytes, a file object or a
PIL image. The facade and the direct mode decode the bytes by content, so nothing here looks at
a file's name or format.

Wherever the client takes a photo it takes a listing's several photos as a list or tuple of
them (`Photos`), sent as repeated `photo` parts that the facade pools into one answer
(`fbmr.core.pooling`); at most `fbmr.core.contract.MAX_PHOTOS`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from fbmr.core.contract import MAX_PHOTOS

Photo = str | Path | bytes | bytearray | memoryview | BinaryIO | Image.Image
# one photo, or a listing's several (a list or tuple; a str or bytes is always one photo)
Photos = Photo | list[Photo] | tuple[Photo, ...]


def photo_list(photos: Photos) -> list[Photo]:
    """`photos` as a list of one or more photos. Raises ValueError for none or more than
    MAX_PHOTOS (the facade would refuse them with `too_many_photos`)."""
    items: list[Photo] = list(photos) if isinstance(photos, list | tuple) else [photos]
    if not items:
        raise ValueError("an empty list of photos: give at least one, or none at all (None)")
    if len(items) > MAX_PHOTOS:
        raise ValueError(f"{len(items)} photos: at most {MAX_PHOTOS} per request")
    return items


def read_file(location: str | Path) -> bytes:
    """The bytes of a local file, or of any fsspec URL (`s3://...`, `memory://...`)."""
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        import fsspec  # only for remote photos

        with fsspec.open(text, "rb") as f:
            return bytes(f.read())
    return Path(text.removeprefix("file://")).read_bytes()


def photo_bytes(photo: Photo) -> bytes:
    """The encoded bytes of `photo`. A PIL image is encoded as PNG (lossless, so the server sees
    the caller's exact pixels)."""
    if isinstance(photo, bytes):
        return photo
    if isinstance(photo, bytearray | memoryview):
        return bytes(photo)
    if isinstance(photo, str | Path):
        return read_file(photo)
    if isinstance(photo, Image.Image):
        buffer = io.BytesIO()
        photo.save(buffer, format="PNG")
        return buffer.getvalue()
    if hasattr(photo, "read"):
        data = photo.read()
        if not isinstance(data, bytes):
            raise TypeError("a photo file object must be opened in binary mode")
        return data
    raise TypeError(
        f"a photo is a path, bytes, a binary file object or a PIL image, not {type(photo).__name__}"
    )
