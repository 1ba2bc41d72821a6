"""Model inputs from listings, and the Triton ensembles called over gRPC (asyncio).

The tokeniser, label map and image settings come from the served repository version, so the
facade turns photos and text into exactly the tensors those models were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.image import preprocess_image


class Kind(StrEnum):
    """Which embedding: the photo's, the text's, or both combined."""

    image = "image"
    text = "text"
    combined = "combined"


# ensemble and its embedding output, per kind of input
ENSEMBLES = {
    Kind.image: ("image_classifier", "image_embedding"),
    Kind.text: ("text_classifier", "text_embedding"),
    Kind.combined: ("product_classifier", "combined_embedding"),
}


CHANNEL_ARGS = [
    # tritonclient's defaults: no message size limit (a batch of photos is large)
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # Reconnect within a second once Triton is back, instead of gRPC's default backoff of up to
    # two minutes, so the facade recovers by itself soon after a Triton restart.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def kind_of(has_photo: bool, has_text: bool) -> Kind:
    """The embedding a query gives: combined with both, else that of the one it has."""
    if has_photo and has_text:
        return Kind.combined
    return Kind.image if has_photo else Kind.text


class TritonUnavailable(RuntimeError):
    """Triton is unreachable, not ready, or refused the request (queue full): retry later."""


def image_input(artifacts: ModelArtifacts, photo: bytes, max_pixels: int) -> np.ndarray:
    """(1, 3, S, S) float32; raises ImageDecodeError for an unusable photo."""
    return preprocess_image(photo, artifacts.image_spec, max_pixels)[None]


def text_input(artifacts: ModelArtifacts, text: str) -> np.ndarray:
    """(1, L) int64 token ids."""
    return artifacts.tokenizer.encode(text)[None]


@dataclass
class Inference:
    """One ensemble's answer for one listing."""

    probabilities: np.ndarray
    embedding: np.ndarray


class TritonModels:
    """The three ensembles behind one reused asyncio gRPC connection."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client = grpcaio.InferenceServerClient(url, channel_args=CHANNEL_ARGS)

    async def close(self) -> None:
        await self._client.close()

    async def ready(self) -> bool:
        try:
            return await self._client.is_server_ready(client_timeout=2.0) and all(
                [
                    await self._client.is_model_ready(m, client_timeout=2.0)
                    for m, _ in ENSEMBLES.values()
                ]
            )
        except InferenceServerException:
            return False

    async def infer(
        self, kind: Kind, image: np.ndarray | None = None, token_ids: np.ndarray | None = None
    ) -> Inference:
        model, embedding = ENSEMBLES[kind]
        tensors = []
        for name, array, dtype in (("image", image, "FP32"), ("token_ids", token_ids, "INT64")):
            if array is not None:
                tensor = InferInput(name, list(array.shape), dtype)
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
        outputs = [InferRequestedOutput("probabilities"), InferRequestedOutput(embedding)]
        try:
            result = await self._client.infer(
                model, tensors, outputs=outputs, client_timeout=self.timeout_s
            )
        except InferenceServerException as err:
            # Unreachable, deadline exceeded, model not ready, or the bounded queue is full:
            # all mean "not now", which the caller may retry.
            raise TritonUnavailable(f"{model}: {err.message() or err}") from None
        return Inference(result.as_numpy("probabilities")[0], result.as_numpy(embedding)[0])
