"""The Triton ensembles, called over one reused asyncio gRPC connection.

Ensemble and tensor names come from `fbmr.core.contract`, the same module export writes them
from, so the facade and the repository cannot disagree on a name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
from numpy.typing import NDArray
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from fbmr.core.contract import (
    ENSEMBLES,
    INPUT_DATATYPES,
    PROBABILITIES,
    TRITON_CHANNEL_ARGS,
    Kind,
)
from fbmr.core.pooling import pool_embeddings, pool_probabilities
from fbmr.serving import request_context


class TritonUnavailable(RuntimeError):
    """Triton is unreachable, not ready, or refused the request (queue full): retry later."""


class ModelVersionUnavailable(TritonUnavailable):
    """Triton does not serve the asked model version (any more, or not yet): a newer export
    replaced it, or the new one is still loading."""


def _version_missing(message: str) -> bool:
    # Triton: "Request for unknown model: 'm' version 2 is not found" or "... is not at ready
    # state"; a model that does not exist at all reads the same without a version.
    return "version" in message and ("not found" in message or "not at ready state" in message)


@dataclass
class Inference:
    """One ensemble's answer for one listing: its photos' rows pooled (`fbmr.core.pooling`)."""

    probabilities: NDArray[np.float32]
    embedding: NDArray[np.float32]


class TritonModels:
    """The three ensembles behind one reused asyncio gRPC connection."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client = grpcaio.InferenceServerClient(url, channel_args=TRITON_CHANNEL_ARGS)

    async def close(self) -> None:
        await self._client.close()

    async def ready(self, version: int | None = None, kinds: Iterable[Kind] = tuple(Kind)) -> bool:
        """Triton up, with the ensembles of `kinds` (all by default) ready (at `version`, when
        given). Not Triton's own readiness, which turns false while any model of its repository
        is not loaded (a refused new version), though every ensemble the facade calls answers."""
        wanted = "" if version is None else str(version)
        try:
            if not await self._client.is_server_live(client_timeout=2.0):
                return False
            for name in (ENSEMBLES[kind].name for kind in kinds):
                if not await self._client.is_model_ready(name, wanted, client_timeout=2.0):
                    return False
            return True
        except InferenceServerException:
            return False

    async def infer(
        self, kind: Kind, inputs: dict[str, NDArray[Any]], version: int | None = None
    ) -> Inference:
        """The ensemble of `kind` at model `version` (default: Triton's latest) on one listing's
        inputs, each with a batch axis of 1."""
        ensemble = ENSEMBLES[kind]
        tensors = []
        for name in ensemble.inputs:
            array = inputs[name]
            tensor = InferInput(name, list(array.shape), INPUT_DATATYPES[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        outputs = [InferRequestedOutput(name) for name in ensemble.outputs]
        try:
            result = await self._client.infer(
                ensemble.name,
                tensors,
                model_version="" if version is None else str(version),
                request_id=info.request_id if (info := request_context.current()) else "",
                outputs=outputs,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as err:
            # Unreachable, deadline exceeded, model not ready, or the bounded queue is full:
            # all mean "not now", which the caller may retry.
            message = f"{ensemble.name}: {err.message() or err}"
            if _version_missing(message):
                raise ModelVersionUnavailable(message) from None
            raise TritonUnavailable(message) from None
        # one row per photo of the listing (one row without a photo): its one answer
        return Inference(
            pool_probabilities(result.as_numpy(PROBABILITIES)),
            pool_embeddings(result.as_numpy(ensemble.embedding)),
        )
