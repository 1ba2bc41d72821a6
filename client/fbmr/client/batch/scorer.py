"""`TritonScorer`: one batch of rows scored straight against Triton's ensembles (direct mode).

It preprocesses photos with `fbmr.core` (optionally in a process pool) and sends whole batches
over one gRPC connection, with the tokeniser, labels and image settings of the repository
version it calls; a listing's several photos are pooled as the facade pools them
(`fbmr.core.pooling`). It is a callable class, so it runs unchanged as Ray Data
`map_batches(TritonScorer, fn_constructor_kwargs=...)` on an actor pool, one connection per
actor. Rows are planned, and the output built, by `fbmr.client.batch.rows`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fbmr.client.batch.rows import (
    NEEDS_PHOTO,
    NEEDS_TEXT,
    Row,
    ScoreOptions,
    output_frame,
    plan_row,
    prepare_photos,
)
from fbmr.client.errors import Unavailable
from fbmr.client.retry import RetryPolicy, retry_call
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    DEFAULT_MAX_PIXELS,
    ENSEMBLES,
    IMAGE,
    INPUT_DATATYPES,
    PROBABILITIES,
    TOKEN_IDS,
    TRITON_CHANNEL_ARGS,
    Kind,
    kind_of,
)
from fbmr.core.listing import model_text
from fbmr.core.pooling import pool_embeddings, pool_probabilities

# gRPC: no message size limit (a batch of photos is large), and reconnect within a second once
# Triton is back instead of gRPC's default back-off of up to two minutes.
# Triton restarting takes seconds to minutes: wait up to two minutes before giving up a batch.
TRITON_RETRY = RetryPolicy(attempts=None, timeout_s=120.0, wait_initial_s=0.5, wait_max_s=5.0)


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
        return output_frame(batch, rows, self.options)

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
        rows: list[Row],
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

    def _images(self, rows: list[Row]) -> dict[int, list[NDArray[Any]]]:
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
