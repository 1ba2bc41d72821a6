"""Scoring one batch of listings: a pandas DataFrame of rows in, a DataFrame of results out.

Rows have `id`, `text` (None: no text) and `photo` (a path or fsspec URL, or a list of a
listing's several, pooled into one answer as the facade pools them, `fbmr.core.pooling`;
None: no photo); any
other column (the run's `_row` position) is passed through. Every row in gives exactly one row
out: its kind, prediction (and embedding, similar listings) or, for a row that cannot be scored,
`error` as `reason: message` (a missing, empty or unreadable photo, empty text, a 4xx from the
facade). Failures that are not the row's fault (Triton or the facade away once retries are
spent, a wrong API key) raise instead, so a run stops and resumes rather than recording them.

Two scorers, one output:
- `TritonScorer` (direct mode) preprocesses photos with `fbmr.core` (optionally in a process
  pool) and sends whole batches to the ensembles over one gRPC connection, with the tokeniser,
  labels and image settings of the repository version it calls. It is a callable class, so it
  runs unchanged as Ray Data `map_batches(TritonScorer, fn_constructor_kwargs=...)` on an actor
  pool, one connection per actor.
- `score_facade_batch` sends each row to the facade with the async client.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from fbmr.client.client import AsyncClient
from fbmr.client.errors import ClientError, NotFound, TooLarge, Unauthorised, Unavailable
from fbmr.client.photos import read_file
from fbmr.client.retry import RetryPolicy, retry_call
from fbmr.client.types import Embedding, Prediction, Similar
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    DEFAULT_MAX_PIXELS,
    ENSEMBLES,
    IMAGE,
    INPUT_DATATYPES,
    MAX_PHOTOS,
    PROBABILITIES,
    TOKEN_IDS,
    TRITON_CHANNEL_ARGS,
    ErrorCode,
    Kind,
    kind_of,
)
from fbmr.core.image import ImageDecodeError, ImageSpec, ImageTooLargeError, image_pixels
from fbmr.core.listing import cell_photos, model_text
from fbmr.core.pooling import pool_embeddings, pool_probabilities

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

# gRPC: no message size limit (a batch of photos is large), and reconnect within a second once
# Triton is back instead of gRPC's default back-off of up to two minutes.
# Triton restarting takes seconds to minutes: wait up to two minutes before giving up a batch.
TRITON_RETRY = RetryPolicy(attempts=None, timeout_s=120.0, wait_initial_s=0.5, wait_max_s=5.0)


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
        ]
    # a row that could not be scored: its ErrorCode, and `code: message` (as `fbmr listings put
    # --report` writes them, code apart)
    fields += [pa.field("code", pa.string()), pa.field("error", pa.string())]
    return pa.schema(fields)


def reason(error: str) -> str:
    """The reason code of an `error` value."""
    return error.split(":", 1)[0]


@dataclass
class _Row:
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


def plan_row(photo: object, text: object, kind: str) -> _Row:
    """The kind a row is scored as, or why it cannot be."""
    photos = cell_photos(photo)
    has_photo = bool(photos)
    if len(photos) > MAX_PHOTOS:
        return _Row(None, f"{TOO_MANY_PHOTOS}: {len(photos)} photos, at most {MAX_PHOTOS}")
    text_given = _given(text)
    has_text = text_given and str(text).strip() != ""
    if kind == AUTO:
        if has_photo or has_text:
            chosen = kind_of(has_photo, has_text)
        elif text_given:
            return _Row(None, f"{TEXT_EMPTY}: the text is empty and there is no photo")
        else:
            return _Row(None, f"{NO_INPUT}: neither a photo nor a text")
    else:
        chosen = Kind(kind)
        if chosen in NEEDS_PHOTO and not has_photo:
            return _Row(chosen, f"{PHOTO_MISSING}: no photo given")
        if chosen in NEEDS_TEXT and not has_text:
            return _Row(chosen, f"{TEXT_EMPTY}: no text given, or only white space")
    return _Row(
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


def _frame(batch: pd.DataFrame, rows: list[_Row], options: ScoreOptions) -> pd.DataFrame:
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
    out["code"] = [reason(r.error) if r.error else None for r in rows]
    out["error"] = [r.error for r in rows]
    return pd.DataFrame(out)


# -- direct mode ----------------------------------------------------------------------------


class TritonScorer:
    """Scores DataFrame batches straight against Triton's ensembles over one gRPC connection.

    `urls`: one Triton (host:port), or several, of which this scorer picks one at random (a
    Ray actor pool then spreads over a fleet). `artifacts`: the tokeniser, labels and image
    settings of the version Triton serves (`ModelArtifacts.load(repo)`). `executor`: a process
    pool to preprocess photos in (None: in this process, as a Ray actor does)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        artifacts: ModelArtifacts,
        options: ScoreOptions | None = None,
        retry: RetryPolicy = TRITON_RETRY,
        timeout_s: float = 60.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        executor: Executor | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self.options = options or ScoreOptions()
        if self.options.similar:
            raise ValueError(
                "similar listings come from the facade's index: score through the facade (--url)"
            )
        choices = [urls] if isinstance(urls, str) else list(urls)
        self.url = random.choice(choices)
        self.artifacts = artifacts
        self.retry = retry
        self.timeout_s = timeout_s
        self.max_pixels = max_pixels
        self.executor = executor
        self._client = grpcclient.InferenceServerClient(self.url, channel_args=TRITON_CHANNEL_ARGS)
        self._max_batch: dict[Kind, int] = {}

    def close(self) -> None:
        self._client.close()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [
            plan_row(p, t, self.options.kind)
            for p, t in zip(batch["photo"], batch["text"], strict=True)
        ]
        images = self._images(rows)
        for kind in Kind:
            members = [i for i, r in enumerate(rows) if r.kind is kind and r.error is None]
            if not members:
                continue
            probabilities, embeddings = self._pooled(kind, rows, members, images)
            for j, i in enumerate(members):
                rows[i].ranked = self.artifacts.labels.rank(probabilities[j])
                rows[i].embedding = embeddings[j]
        return _frame(batch, rows, self.options)

    def embeddings(
        self, batch: pd.DataFrame, kinds: Sequence[Kind] = tuple(Kind)
    ) -> tuple[list[str | None], dict[Kind, NDArray[np.float32]]]:
        """Every row's embedding of each of `kinds` (a photo preprocessed once for all), for
        building a similar-listing index: the rows' errors (None: embedded), and per kind one
        array with a row per embedded row, in batch order. Triton's transient errors are
        retried under this scorer's policy; `Unavailable` once it is spent."""
        needs = kind_of(any(k in NEEDS_PHOTO for k in kinds), any(k in NEEDS_TEXT for k in kinds))
        rows = [
            plan_row(p, t, needs.value) for p, t in zip(batch["photo"], batch["text"], strict=True)
        ]
        images = self._images(rows)
        members = [i for i, r in enumerate(rows) if r.error is None]
        vectors: dict[Kind, NDArray[np.float32]] = {}
        for kind in kinds:
            if not members:
                break
            vectors[kind] = self._pooled(kind, rows, members, images)[1].astype(np.float32)
        return [r.error for r in rows], vectors

    def _pooled(
        self,
        kind: Kind,
        rows: list[_Row],
        members: list[int],
        images: dict[int, list[NDArray[Any]]],
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        """Probabilities and embeddings of `kind` for the rows at `members`, in that order: a
        row with several photos is inferred once per photo (its text beside each) and pooled
        (`fbmr.core.pooling`), as the facade pools a request's photos."""
        owners = [i for i in members for _ in images[i]] if kind in NEEDS_PHOTO else list(members)
        inputs: dict[str, NDArray[Any]] = {}
        if kind in NEEDS_PHOTO:
            inputs[IMAGE] = np.stack([photo for i in members for photo in images[i]])
        if kind in NEEDS_TEXT:
            # text read as training read the listing (and as the facade reads what it is sent)
            encode = self.artifacts.text_input
            tokens = {i: encode(model_text(text=rows[i].text)) for i in members}
            inputs[TOKEN_IDS] = np.stack([tokens[i] for i in owners])
        probabilities, embeddings = self._infer(kind, inputs)
        if len(owners) == len(members):
            return probabilities, embeddings
        owner = np.asarray(owners)
        return (
            np.stack([pool_probabilities(probabilities[owner == i]) for i in members]),
            np.stack([pool_embeddings(embeddings[owner == i]) for i in members]),
        )

    def _images(self, rows: list[_Row]) -> dict[int, list[NDArray[Any]]]:
        """Each row's preprocessed photos by row position; a row any of whose photos fails
        gets that photo's error (as the facade refuses the whole request)."""
        wanted = [i for i, r in enumerate(rows) if r.photos and r.error is None]
        owners = [i for i in wanted for _ in rows[i].photos]
        locations = [location for i in wanted for location in rows[i].photos]
        spec = self.artifacts.image_spec
        if self.executor is not None and locations:
            prepared = self.executor.submit(
                prepare_photos, locations, spec, self.max_pixels
            ).result()
        else:
            prepared = prepare_photos(locations, spec, self.max_pixels)
        images: dict[int, list[NDArray[Any]]] = {i: [] for i in wanted}
        for i, (array, error) in zip(owners, prepared, strict=True):
            if error is not None:
                rows[i].error = rows[i].error or error
            else:
                assert array is not None
                images[i].append(array)
        return {i: photos for i, photos in images.items() if rows[i].error is None}

    def max_batch_size(self, kind: Kind) -> int:
        """The ensemble's max_batch_size, from Triton (asked once)."""
        if kind not in self._max_batch:
            config = self._call(
                lambda: self._client.get_model_config(ENSEMBLES[kind].name, as_json=True),
                ENSEMBLES[kind].name,
            )
            self._max_batch[kind] = int(config["config"].get("max_batch_size") or 1)
        return self._max_batch[kind]

    def _call(self, call: Callable[[], Any], what: str) -> Any:
        from tritonclient.utils import InferenceServerException

        def attempt() -> Any:
            try:
                return call()
            except InferenceServerException as err:
                # unreachable, deadline exceeded, not ready, queue full: all "not now"
                raise Unavailable(
                    f"Triton at {self.url}, {what}: {err.message() or err}", status=None
                ) from None

        return retry_call(attempt, Unavailable, self.retry)

    def _infer(
        self, kind: Kind, inputs: dict[str, NDArray[Any]]
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        """Probabilities and embeddings of a stack of inputs, in pieces of max_batch_size."""
        from tritonclient.grpc import InferInput, InferRequestedOutput

        ensemble = ENSEMBLES[kind]
        size = len(next(iter(inputs.values())))
        step = self.max_batch_size(kind)
        probabilities, embeddings = [], []
        for start in range(0, size, step):
            tensors = []
            for name in ensemble.inputs:
                array = np.ascontiguousarray(inputs[name][start : start + step])
                tensor = InferInput(name, list(array.shape), INPUT_DATATYPES[name])
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            outputs = [InferRequestedOutput(name) for name in ensemble.outputs]
            call = partial(
                self._client.infer,
                ensemble.name,
                tensors,
                # the version whose tokeniser, labels and image settings built these inputs
                model_version=str(self.artifacts.version),
                outputs=outputs,
                client_timeout=self.timeout_s,
            )
            result = self._call(call, ensemble.name)
            probabilities.append(result.as_numpy(PROBABILITIES))
            embeddings.append(result.as_numpy(ensemble.embedding))
        return np.concatenate(probabilities), np.concatenate(embeddings)


# -- through the facade ---------------------------------------------------------------------


def answer_error(err: ClientError) -> str:
    """The row's error for a facade 4xx about its content (422, 413, 400): the answer's code
    (never its wording), or the status's when the answer has none."""
    code = err.code or (
        ErrorCode.too_large if isinstance(err, TooLarge) else ErrorCode.invalid_input
    )
    return f"{code.value}: {err.message}"


async def _score_facade_row(
    client: AsyncClient, row: _Row, options: ScoreOptions, limit: asyncio.Semaphore
) -> _Row:
    if row.error is not None:
        return row
    photo: tuple[bytes, ...] | None = None  # a tuple: the client takes it as the photos' type
    if row.photos:
        try:
            photo = tuple([await asyncio.to_thread(read_photo, where) for where in row.photos])
        except ValueError as err:
            row.error = str(err)
            return row

    async def limited(call: Awaitable[Any]) -> Any:
        async with limit:
            return await call

    calls: list[Awaitable[Any]] = [limited(client.predict(photo, row.text))]
    if options.embeddings:
        calls.append(limited(client.embed(photo, row.text)))
    if options.similar:
        calls.append(limited(client.similar(photo, row.text, options.similar)))
    try:
        answers = await asyncio.gather(*calls)
    except (Unauthorised, NotFound):
        raise  # the run's configuration is wrong, not the row
    except ClientError as err:
        row.error = answer_error(err)
        return row
    prediction: Prediction = answers[0]
    row.ranked = list(zip(prediction.classes, prediction.probabilities, strict=True))
    rest = answers[1:]
    if options.embeddings:
        embedding: Embedding = rest.pop(0)
        row.embedding = embedding.vector
    if options.similar:
        row.similar = rest.pop(0)
    return row


async def score_facade_batch(
    client: AsyncClient,
    batch: pd.DataFrame,
    options: ScoreOptions,
    limit: asyncio.Semaphore,
) -> pd.DataFrame:
    """A batch scored through the facade, at most `limit` requests in flight at once."""
    rows = [
        plan_row(p, t, options.kind) for p, t in zip(batch["photo"], batch["text"], strict=True)
    ]
    scored = await asyncio.gather(*(_score_facade_row(client, r, options, limit) for r in rows))
    return _frame(batch, list(scored), options)
