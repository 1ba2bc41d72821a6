"""A request's photo and text, checked against the facade's limits and turned into the model's
input tensors by the same `fbmr.core` functions training uses. Every problem a caller can fix
becomes a 4xx saying what to change."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import UploadFile
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import IMAGE, TOKEN_IDS, Kind, kind_of
from fbmr.core.image import ImageDecodeError, ImageTooLargeError
from fbmr.serving.errors import ApiError
from fbmr.serving.settings import FacadeSettings


def query_kind(has_photo: bool, has_text: bool) -> Kind:
    """The kind of a query that may carry a photo, a text or both (a 422 for neither)."""
    if not has_photo and not has_text:
        raise ApiError(422, "give a photo, a text, or both")
    return kind_of(has_photo, has_text)


async def read_photo(photo: UploadFile, settings: FacadeSettings) -> bytes:
    data = await photo.read(settings.max_body_bytes + 1)
    if len(data) > settings.max_body_bytes:
        raise ApiError(413, f"photo over the limit of {settings.max_body_bytes} bytes")
    if not data:
        raise ApiError(422, "photo: empty file")
    return data


async def photo_tensor(
    photo: UploadFile, artifacts: ModelArtifacts, settings: FacadeSettings
) -> NDArray[np.uint8]:
    """A (1, 3, S, S) image input; decoding runs in a worker thread, off the event loop."""
    data = await read_photo(photo, settings)
    try:
        pixels = await run_in_threadpool(artifacts.image_input, data, settings.max_pixels)
    except ImageTooLargeError as err:
        raise ApiError(413, f"photo: {err}") from None
    except ImageDecodeError as err:
        raise ApiError(422, f"photo: {err}") from None
    return pixels[None]


def text_tensor(
    text: str | None, artifacts: ModelArtifacts, settings: FacadeSettings
) -> NDArray[np.int64]:
    """(1, L) token ids of a listing text."""
    text = (text or "").strip()
    if not text:
        raise ApiError(422, "text: empty; give the listing's name and/or description")
    if len(text) > settings.max_text_chars:
        raise ApiError(
            413, f"text: {len(text)} characters, over the limit of {settings.max_text_chars}"
        )
    return artifacts.text_input(text)[None]


async def query_inputs(
    photo: UploadFile | None,
    text: str | None,
    artifacts: ModelArtifacts,
    settings: FacadeSettings,
) -> tuple[Kind, dict[str, NDArray[Any]]]:
    """The kind of a query and its model inputs, named as the ensemble of that kind takes them."""
    kind = query_kind(photo is not None, text is not None)
    inputs: dict[str, NDArray[Any]] = {}
    if photo is not None:
        inputs[IMAGE] = await photo_tensor(photo, artifacts, settings)
    if text is not None:
        inputs[TOKEN_IDS] = text_tensor(text, artifacts, settings)
    return kind, inputs
