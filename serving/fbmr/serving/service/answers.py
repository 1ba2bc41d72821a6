"""Triton's answer to one query at the model version in use: the work every prediction, embedding,
similar-listing search and listing put shares. Past the admission bound, or while Triton cannot
answer, a `service.errors.Unavailable` (a 503 with Retry-After); Triton's own error text goes to
the log, never to the caller."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from numpy.typing import NDArray

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ErrorCode, Kind
from fbmr.serving import request_context
from fbmr.serving.service.admission import Overloaded
from fbmr.serving.service.errors import Unavailable
from fbmr.serving.service.state import FacadeState
from fbmr.serving.triton.inference import Inference, ModelVersionUnavailable, TritonUnavailable

log = logging.getLogger(__name__)

Inputs = dict[str, NDArray[Any]]
# A query's model inputs as a function of the artifacts they are built for, so that a request
# moved to a newer model version is encoded again for it.
Encoder = Callable[[ModelArtifacts], Awaitable[Inputs]]

UNAVAILABLE = "model server unavailable, retry later"
OVERLOADED = "too many requests under way, retry later"


async def answer(
    state: FacadeState, kind: Kind, encode: Encoder
) -> tuple[ModelArtifacts, Inference]:
    """Triton's answer at the model version in use, with the artifacts that built its inputs and
    will read its outputs. Unavailable at once when the facade has as many requests under way as
    it admits, and while Triton cannot answer."""
    try:
        with state.admission.slot():
            return await _answer(state, kind, encode)
    except Overloaded:
        raise Unavailable(OVERLOADED, state.settings.retry_after_s, ErrorCode.overloaded) from None


async def _answer(
    state: FacadeState, kind: Kind, encode: Encoder
) -> tuple[ModelArtifacts, Inference]:
    """When Triton does not serve the version in use (a newer export is replacing it), the request
    waits for the swap (`FacadeState.after_refusal`) and is encoded once more for the version
    then in use."""
    retry_after = state.settings.retry_after_s
    artifacts = state.artifacts()
    for attempt in range(2):
        inputs = await encode(artifacts)
        try:
            result = await state.models.infer(kind, inputs, artifacts.version)
            if info := request_context.current():
                info.model_version = artifacts.version
            return artifacts, result
        except ModelVersionUnavailable as err:
            log.info("model version %d not served: %s", artifacts.version, err)
            swapped = await state.after_refusal(kind, artifacts.version) if attempt == 0 else None
            if swapped is None:
                raise Unavailable(UNAVAILABLE, retry_after) from None
            artifacts = swapped
        except TritonUnavailable as err:
            log.warning("Triton call failed: %s", err)
            raise Unavailable(UNAVAILABLE, retry_after) from None
    raise AssertionError("unreachable: the loop returns or raises")
