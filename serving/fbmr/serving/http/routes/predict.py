"""`/v1/predict/{image,text,combined}` and `/v1/embed`: a listing's category and its embedding."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from numpy.typing import NDArray

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    EMBED_PATH,
    PREDICT_COMBINED_PATH,
    PREDICT_IMAGE_PATH,
    PREDICT_TEXT_PATH,
    ErrorCode,
    Kind,
)
from fbmr.serving import request_context
from fbmr.serving.http.deps import PROTECTED, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES, unavailable
from fbmr.serving.http.inputs import (
    Encoder,
    ListingForm,
    checked_text,
    encoder,
    query_encoder,
    read_photo,
    text_query,
)
from fbmr.serving.http.schemas import EmbedResponse, ErrorResponse, Prediction, TextQuery
from fbmr.serving.service.admission import Overloaded
from fbmr.serving.service.state import FacadeState
from fbmr.serving.triton.inference import Inference, ModelVersionUnavailable, TritonUnavailable

log = logging.getLogger(__name__)

router = APIRouter(dependencies=PROTECTED, responses=ERROR_RESPONSES)

PHOTO = File(..., description="The listing's photo.")
OPTIONAL_PHOTO = File(None, description="The listing's photo.")
UNAVAILABLE = "model server unavailable, retry later"
OVERLOADED = "too many requests under way, retry later"


async def answer(
    state: FacadeState, kind: Kind, encode: Encoder
) -> tuple[ModelArtifacts, Inference]:
    """Triton's answer at the model version in use, with the artifacts that built its inputs and
    will read its outputs. A 503 with Retry-After at once when the facade has as many requests
    under way as it admits, and while Triton cannot answer (its error text goes to the log, not
    the caller)."""
    try:
        with state.admission.slot():
            return await _answer(state, kind, encode)
    except Overloaded:
        raise unavailable(OVERLOADED, state.settings.retry_after_s, ErrorCode.overloaded) from None


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
                raise unavailable(UNAVAILABLE, retry_after) from None
            artifacts = swapped
        except TritonUnavailable as err:
            log.warning("Triton call failed: %s", err)
            raise unavailable(UNAVAILABLE, retry_after) from None
    raise AssertionError("unreachable: the loop returns or raises")


def prediction(probabilities: NDArray[np.float32], artifacts: ModelArtifacts) -> Prediction:
    ranked = artifacts.labels.rank(probabilities)
    return Prediction(
        pred=ranked[0][0],
        classes=[c for c, _ in ranked],
        probabilities=[p for _, p in ranked],
        model_version=artifacts.version,
    )


@router.post(PREDICT_IMAGE_PATH, response_model=Prediction)
async def predict_image(state: State, settings: Settings, photo: UploadFile = PHOTO) -> Prediction:
    """Category of a listing from its photo."""
    data = await read_photo(photo, settings)
    artifacts, result = await answer(state, Kind.image, encoder(Kind.image, data, None, settings))
    return prediction(result.probabilities, artifacts)


# /v1/predict/text reads its body itself, so that a form works as well as JSON; documented here
TEXT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TextQuery.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": TextQuery.model_json_schema()},
        },
    }
}


@router.post(
    PREDICT_TEXT_PATH,
    response_model=Prediction,
    openapi_extra=TEXT_BODY,
    responses={415: {"model": ErrorResponse}},
)
async def predict_text(request: Request, state: State, settings: Settings) -> Prediction:
    """Category of a listing from its name and/or description: JSON `{"text": "..."}`, or a
    form field `text` (urlencoded or multipart), as the photo endpoints take it."""
    text = checked_text(await text_query(request), settings)
    artifacts, result = await answer(state, Kind.text, encoder(Kind.text, None, text, settings))
    return prediction(result.probabilities, artifacts)


@router.post(PREDICT_COMBINED_PATH, response_model=Prediction)
async def predict_combined(
    state: State, settings: Settings, listing: ListingForm, photo: UploadFile = PHOTO
) -> Prediction:
    """Category of a listing from its photo and text (`text`, or `name` and `description`)
    together."""
    data, checked = await read_photo(photo, settings), checked_text(listing, settings)
    encode = encoder(Kind.combined, data, checked, settings)
    artifacts, result = await answer(state, Kind.combined, encode)
    return prediction(result.probabilities, artifacts)


@router.post(EMBED_PATH, response_model=EmbedResponse)
async def embed(
    state: State,
    settings: Settings,
    listing: ListingForm,
    photo: UploadFile | None = OPTIONAL_PHOTO,
) -> EmbedResponse:
    """The listing's embedding: image (photo only), text (text only) or combined (both)."""
    kind, encode = await query_encoder(photo, listing, settings)
    artifacts, result = await answer(state, kind, encode)
    return EmbedResponse(
        kind=kind, embedding=result.embedding.tolist(), model_version=artifacts.version
    )
