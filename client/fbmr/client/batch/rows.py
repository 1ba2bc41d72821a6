"""One batch of listings to score: a pandas DataFrame of rows in, a DataFrame of results out;
what both scorers share (the options, each row's plan, its photos read, the output's schema).

Rows have `id`, `text` (None: no text) and `photo` (a path or fsspec URL, or a list of a
listing's several, pooled into one answer as the facade pools them, `fbmr.core.pooling`; None:
no photo); any other column (the run's `_row` position) is passed through. Every row in gives
exactly one row out: its kind, prediction (and embedding, similar listings) or, for a row that
cannot be scored, `error` as `reason: message` (a missing, empty or unreadable photo, empty
text, a 4xx from the facade). Failures that are not the row's fault (Triton or the facade away
once retries are spent, a wrong API key) raise instead, so a run stops and resumes rather than
recording them.

Two scorers build their output here, from the rows planned here:
- `TritonScorer` (`fbmr.client.batch.scorer`, direct mode) sends whole batches to Triton's
  ensembles over one gRPC connection; it also runs as a Ray actor.
- `score_facade_batch` (`fbmr.client.batch.facade`) sends each row to the facade with the async
  client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from fbmr.client.photos import read_file
from fbmr.client.types import Similar
from fbmr.core.contract import (
    DEFAULT_MAX_PIXELS,
    ENSEMBLES,
    IMAGE,
    MAX_PHOTOS,
    TOKEN_IDS,
    ErrorCode,
    Kind,
    kind_of,
)
from fbmr.core.decode import ImageDecodeError, ImageTooLargeError
from fbmr.core.image import ImageSpec, image_pixels
from fbmr.core.listing import cell_photos

AUTO = "auto"

# Why a row was not scored: the part of `error` before the colon, an ErrorCode (the facade's
# own codes, and the same codes for what the client finds before sending)
NO_INPUT = ErrorCode.no_input
TEXT_EMPTY = ErrorCode.text_empty
PHOTO_MISSING = ErrorCode.photo_missing
PHOTO_EMPTY = ErrorCode.photo_empty
PHOTO_UNREADABLE = ErrorCode.photo_unreadable
PHOTO_TOO_LARGE = ErrorCode.photo_too_large
TOO_MANY_PHOTOS = ErrorCode.too_many_photos

NEEDS_PHOTO = {kind for kind in Kind if IMAGE in ENSEMBLES[kind].inputs}
NEEDS_TEXT = {kind for kind in Kind if TOKEN_IDS in ENSEMBLES[kind].inputs}


@dataclass(frozen=True)
class ScoreOptions:
    """What to compute for each row.

    `kind`: auto (combined with a photo and a text, else the one given) or a fixed kind;
    `top`: categories kept per row, most probable first (None: all); `embeddings`: keep the
    embedding; `similar`: the ids and scores of that many similar listings (facade only)."""

    kind: str = AUTO
    top: int | None = 3
    embeddings: bool = False
    similar: int = 0

    def __post_init__(self) -> None:
        if self.kind != AUTO:
            Kind(self.kind)  # raises for an unknown kind
        if self.top is not None and self.top < 1:
            raise ValueError(f"top must be positive, got {self.top}")
        if self.similar < 0:
            raise ValueError(f"similar must be 0 or more, got {self.similar}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_schema(options: ScoreOptions, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The result columns for `options` (fixed types, so chunks of all-error rows concatenate)."""
    fields = [
        *extra,
        pa.field("id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("pred", pa.string()),
        pa.field("classes", pa.list_(pa.string())),
        pa.field("probabilities", pa.list_(pa.float64())),
    ]
    if options.embeddings:
        fields.append(pa.field("embedding", pa.list_(pa.float32())))
    if options.similar:
        fields += [
            pa.field("similar_ids", pa.list_(pa.string())),
            pa.field("similar_scores", pa.list_(pa.float32())),
            pa.field("similar_rank_scores", pa.list_(pa.float32())),
        ]
    # a row that could not be scored: its ErrorCode, and `code: message` (as `fbmr listings put
    # --report` writes them, code apart)
    fields += [pa.field("code", pa.string()), pa.field("error", pa.string())]
    return pa.schema(fields)


def reason(error: str) -> str:
    """The reason code of an `error` value."""
    return error.split(":", 1)[0]


@dataclass
class Row:
    """One row's progress through scoring."""

    kind: Kind | None
    error: str | None = None
    photos: list[str] = field(default_factory=list)
    text: str | None = None
    ranked: list[tuple[str, float]] = field(default_factory=list)
    embedding: NDArray[Any] | None = None
    similar: Similar | None = None


def _given(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def plan_row(photo: object, text: object, kind: str) -> Row:
    """The kind a row is scored as, or why it cannot be."""
    photos = cell_photos(photo)
    has_photo = bool(photos)
    if len(photos) > MAX_PHOTOS:
        return Row(None, f"{TOO_MANY_PHOTOS}: {len(photos)} photos, at most {MAX_PHOTOS}")
    text_given = _given(text)
    has_text = text_given and str(text).strip() != ""
    if kind == AUTO:
        if has_photo or has_text:
            chosen = kind_of(has_photo, has_text)
        elif text_given:
            return Row(None, f"{TEXT_EMPTY}: the text is empty and there is no photo")
        else:
            return Row(None, f"{NO_INPUT}: neither a photo nor a text")
    else:
        chosen = Kind(kind)
        if chosen in NEEDS_PHOTO and not has_photo:
            return Row(chosen, f"{PHOTO_MISSING}: no photo given")
        if chosen in NEEDS_TEXT and not has_text:
            return Row(chosen, f"{TEXT_EMPTY}: no text given, or only white space")
    return Row(
        chosen,
        photos=photos if chosen in NEEDS_PHOTO else [],
        text=str(text) if chosen in NEEDS_TEXT else None,
    )


def read_photo(location: str) -> bytes:
    """A photo's bytes; raises ValueError with the row's error for a missing or empty one."""
    try:
        data = read_file(location)
    except FileNotFoundError:
        raise ValueError(f"{PHOTO_MISSING}: {location} not found") from None
    except OSError as err:
        raise ValueError(f"{PHOTO_UNREADABLE}: {location}: {err}") from None
    if not data:
        raise ValueError(f"{PHOTO_EMPTY}: {location} is an empty file")
    return data


def prepare_photo(
    location: str, spec: ImageSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[NDArray[Any] | None, str | None]:
    """A photo as the image ensembles' input (`fbmr.core.image.image_pixels`, as
    `ModelArtifacts.image_input` gives it), or the row's error."""
    try:
        return image_pixels(read_photo(location), spec, max_pixels), None
    except ValueError as err:
        if isinstance(err, ImageTooLargeError):
            return None, f"{PHOTO_TOO_LARGE}: {location}: {err}"
        if isinstance(err, ImageDecodeError):
            return None, f"{PHOTO_UNREADABLE}: {location}: {err}"
        return None, str(err)


def prepare_photos(
    locations: Sequence[str], spec: ImageSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[tuple[NDArray[Any] | None, str | None]]:
    """`prepare_photo` for several photos (one process-pool task per batch)."""
    return [prepare_photo(location, spec, max_pixels) for location in locations]


def output_frame(batch: pd.DataFrame, rows: list[Row], options: ScoreOptions) -> pd.DataFrame:
    """The result rows, in the batch's order, with its pass-through columns first."""
    out: dict[str, list[Any]] = {
        c: list(batch[c]) for c in batch.columns if c not in ("id", "text", "photo")
    }
    out["id"] = [str(i) for i in batch["id"]]
    out["kind"] = [r.kind.value if r.kind else None for r in rows]
    ok = [r.error is None for r in rows]
    out["pred"] = [r.ranked[0][0] if good else None for r, good in zip(rows, ok, strict=True)]
    top = options.top
    out["classes"] = [
        [c for c, _ in r.ranked[:top]] if good else None for r, good in zip(rows, ok, strict=True)
    ]
    out["probabilities"] = [
        [p for _, p in r.ranked[:top]] if good else None for r, good in zip(rows, ok, strict=True)
    ]
    if options.embeddings:
        out["embedding"] = [
            r.embedding.astype(np.float32).tolist() if good and r.embedding is not None else None
            for r, good in zip(rows, ok, strict=True)
        ]
    if options.similar:
        out["similar_ids"] = [
            r.similar.ids if good and r.similar else None for r, good in zip(rows, ok, strict=True)
        ]
        out["similar_scores"] = [
            r.similar.scores if good and r.similar else None
            for r, good in zip(rows, ok, strict=True)
        ]
        out["similar_rank_scores"] = [
            r.similar.rank_scores if good and r.similar else None
            for r, good in zip(rows, ok, strict=True)
        ]
    out["code"] = [reason(r.error) if r.error else None for r in rows]
    out["error"] = [r.error for r in rows]
    return pd.DataFrame(out)
