"""A request's photo and text, checked against the facade's limits and turned into the model's
input tensors by the same `fbmr.core` functions training uses. Every problem a caller can fix
becomes a 4xx saying what to change.

Inputs are built for one model version's artifacts: `encoder` returns a function of the
artifacts, so a request that must move to a newer version builds them again for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import Depends, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from numpy.typing import NDArray
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    ENSEMBLES,
    IMAGE,
    MAX_EXCLUDE_IDS,
    MAX_PHOTOS,
    TOKEN_IDS,
    ErrorCode,
    Kind,
    kind_of,
    listing_id_problem,
)
from fbmr.core.decode import ImageDecodeError, ImageTooLargeError, PixelBudget
from fbmr.core.listing import model_text
from fbmr.serving.http.errors import FORM_TYPES, ApiError, media_type
from fbmr.serving.http.schemas import TextQuery
from fbmr.serving.service.answers import Encoder, Inputs
from fbmr.serving.settings import FacadeSettings

SEND_TEXT = (
    'send JSON {"text": "..."} or {"name": "...", "description": "..."} (Content-Type: '
    "application/json), or the same as form fields"
)
TEXT_FIELDS = ("text", "name", "description")
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}


def finite_price(name: str, value: float | None) -> None:
    """A 422 when a price field (a listing's, or a filter's bound) is infinite, NaN or negative,
    which no listing has (and JSON cannot answer with the first two)."""
    if value is not None and not math.isfinite(value):
        raise ApiError(422, f"{name}: must be a finite number, got {value}")
    if value is not None and value < 0:
        raise ApiError(422, f"{name}: must be 0 or more, got {value:g}")


def checked_listing_id(listing_id: str) -> str:
    """`listing_id`, or a 422 when it breaks the id rule (`fbmr.core.contract.LISTING_ID_RULE`)."""
    if problem := listing_id_problem(listing_id):
        raise ApiError(422, problem, code=ErrorCode.listing_id_invalid)
    return listing_id


def checked_exclude_ids(ids: list[str]) -> frozenset[str]:
    """The ids a similar-listing query leaves out: at most MAX_EXCLUDE_IDS, each a listing id
    (a 422 otherwise), so that what one query costs stays bounded."""
    if len(ids) > MAX_EXCLUDE_IDS:
        raise ApiError(422, f"exclude_id: {len(ids)} given, at most {MAX_EXCLUDE_IDS}")
    return frozenset(checked_listing_id(listing_id) for listing_id in ids)


def query_kind(has_photo: bool, has_text: bool) -> Kind:
    """The kind of a query that may carry a photo, a text or both (a 422 for neither)."""
    if not has_photo and not has_text:
        raise ApiError(
            422,
            "give a photo, a text, or both (multipart/form-data fields)",
            code=ErrorCode.no_input,
        )
    return kind_of(has_photo, has_text)


async def read_photos(photos: list[UploadFile], settings: FacadeSettings) -> list[bytes]:
    """A request's photos (the `photo` part, repeated for a listing's several): a 422 past
    MAX_PHOTOS, counted before any is read."""
    if len(photos) > MAX_PHOTOS:
        raise ApiError(
            422,
            f"photo: {len(photos)} photos, at most {MAX_PHOTOS} per request",
            code=ErrorCode.too_many_photos,
        )
    return [await read_photo(photo, settings) for photo in photos]


async def read_photo(photo: UploadFile, settings: FacadeSettings) -> bytes:
    data = await photo.read(settings.max_body_bytes + 1)
    if len(data) > settings.max_body_bytes:
        raise ApiError(
            413,
            f"photo over the limit of {settings.max_body_bytes} bytes",
            code=ErrorCode.photo_too_large,
        )
    if not data:
        raise ApiError(422, "photo: empty file", code=ErrorCode.photo_empty)
    return data


@functools.cache
def decode_budget(pixels: int) -> PixelBudget:
    """The process's one budget of pixels being decoded at once (`max_decode_pixels`)."""
    return PixelBudget(pixels)


def return_large_buffers() -> None:
    """Have glibc give large buffers (a decoded photo) back to the system when freed. By
    default its threshold for that rises after the first large free, and the worker threads'
    arenas then keep hundreds of megabytes after a few large photos; fixed at 1 MB, a process
    that decoded four 64-megapixel photos returns to its size before them. Nothing where the
    C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


async def image_tensor(
    data: bytes, artifacts: ModelArtifacts, settings: FacadeSettings
) -> NDArray[np.uint8]:
    """A (1, 3, S, S) image input; decoding runs in a worker thread, off the event loop, within
    the process's decoding budget."""
    budget = decode_budget(settings.max_decode_pixels)
    try:
        pixels = await run_in_threadpool(artifacts.image_input, data, settings.max_pixels, budget)
    except ImageTooLargeError as err:
        raise ApiError(413, f"photo: {err}", code=ErrorCode.photo_too_large) from None
    except ImageDecodeError as err:
        raise ApiError(422, f"photo: {err}", code=ErrorCode.photo_unreadable) from None
    return pixels[None]


def listing_form(
    text: str | None = Form(None, description=TextQuery.model_fields["text"].description),
    name: str | None = Form(None, description=TextQuery.model_fields["name"].description),
    description: str | None = Form(
        None, description=TextQuery.model_fields["description"].description
    ),
) -> TextQuery:
    """A listing's text from form fields (a route dependency): `text`, or `name` and
    `description`."""
    return TextQuery(text=text, name=name, description=description)


ListingForm = Annotated[TextQuery, Depends(listing_form)]


async def text_query(request: Request) -> TextQuery:
    """The text of a body that is JSON or a form (urlencoded or multipart, as the photo endpoints
    take it): `text`, or `name` and `description`; callers of the combined endpoint send both."""
    content_type = media_type(request)
    if content_type in FORM_TYPES:
        async with request.form() as form:
            fields = {name: form.get(name) for name in TEXT_FIELDS}
        if any(value is not None and not isinstance(value, str) for value in fields.values()):
            raise ApiError(422, f"text, name and description must be text fields; {SEND_TEXT}")
        query = TextQuery.model_validate(fields)
        if not query.given:
            raise ApiError(422, f"no text in the form; {SEND_TEXT}")
        return query
    if content_type != "application/json" and not content_type.endswith("+json"):
        sent = f"a {content_type} body" if content_type else "a body without Content-Type"
        raise ApiError(415, f"{sent} cannot be read; {SEND_TEXT}")
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested too deep
        raise ApiError(400, f"invalid request: the body is not JSON ({err}); {SEND_TEXT}") from None
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), "not an object")
        raise ApiError(422, f"invalid request: the body is {kind}; {SEND_TEXT}")
    try:
        query = TextQuery.model_validate(data)
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None
    if not query.given:
        raise ApiError(422, f"no text in the body; {SEND_TEXT}")
    return query


def checked_text(query: TextQuery, settings: FacadeSettings) -> str:
    """The text the model reads for a query (`fbmr.core.listing.model_text`, as training reads a
    listing), within the limits: a 422 for an empty one or for fields and a free text together,
    a 413 for one too long."""
    sent = sum(len(part) for part in (query.text, query.name, query.description) if part)
    if sent > settings.max_text_chars:
        limit = settings.max_text_chars
        message = f"text: {sent} characters, over the limit of {limit}"
        raise ApiError(413, message, code=ErrorCode.text_too_long)
    try:
        text = model_text(query.name, query.description, query.text)
    except ValueError as err:
        raise ApiError(422, f"text: {err}") from None
    if not text:
        raise ApiError(
            422,
            "text: empty; give the listing's name and/or description",
            code=ErrorCode.text_empty,
        )
    return text


def encoder(
    kind: Kind, photos: Sequence[bytes], text: str | None, settings: FacadeSettings
) -> Encoder:
    """The model inputs of a query of `kind`, as a function of the artifacts they are for: one
    row per photo (the text beside each), which Triton answers in one call and
    `fbmr.serving.triton.inference` pools into the listing's answer; one row without a photo."""

    async def encode(artifacts: ModelArtifacts) -> Inputs:
        inputs: Inputs = {}
        needs = ENSEMBLES[kind].inputs
        rows = len(photos) if IMAGE in needs else 1
        for name in needs:
            if name == IMAGE:
                assert photos
                # one after another: each decode already waits for room in the pixel budget
                pixels = [await image_tensor(photo, artifacts, settings) for photo in photos]
                inputs[IMAGE] = np.concatenate(pixels)
            elif name == TOKEN_IDS:
                assert text is not None
                inputs[TOKEN_IDS] = np.repeat(artifacts.text_input(text)[None], rows, axis=0)
        return inputs

    return encode


async def query_encoder(
    photos: list[UploadFile] | None, query: TextQuery, settings: FacadeSettings
) -> tuple[Kind, Encoder]:
    """The kind of a query that may carry photos, a text or both, and its inputs' encoder."""
    kind = query_kind(bool(photos), query.given)
    data = await read_photos(photos, settings) if photos else []
    checked = checked_text(query, settings) if query.given else None
    return kind, encoder(kind, data, checked, settings)
