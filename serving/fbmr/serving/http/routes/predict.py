"""`/v1/predict/{image,text,combined}` and `/v1/embed`: a listing's category and its embedding."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, UploadFile

from fbmr.core.contract import (
    EMBED_PATH,
    PREDICT_COMBINED_PATH,
    PREDICT_IMAGE_PATH,
    PREDICT_TEXT_PATH,
    Kind,
)
from fbmr.serving.http.deps import OPTIONAL_PHOTO, PHOTO, PROTECTED, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES
from fbmr.serving.http.inputs import (
    ListingForm,
    checked_text,
    encoder,
    query_encoder,
    read_photos,
    text_query,
)
from fbmr.serving.http.schemas import EmbedResponse, ErrorResponse, Prediction, TextQuery
from fbmr.serving.service.answers import answer

router = APIRouter(dependencies=PROTECTED, responses=ERROR_RESPONSES)


@router.post(PREDICT_IMAGE_PATH, response_model=Prediction)
async def predict_image(
    state: State, settings: Settings, photo: list[UploadFile] = PHOTO
) -> Prediction:
    """Category of a listing from its photo, or its several photos pooled."""
    data = await read_photos(photo, settings)
    artifacts, result = await answer(state, Kind.image, encoder(Kind.image, data, None, settings))
    return Prediction.ranked(result.probabilities, artifacts)


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
    artifacts, result = await answer(state, Kind.text, encoder(Kind.text, [], text, settings))
    return Prediction.ranked(result.probabilities, artifacts, text)


@router.post(PREDICT_COMBINED_PATH, response_model=Prediction)
async def predict_combined(
    state: State, settings: Settings, listing: ListingForm, photo: list[UploadFile] = PHOTO
) -> Prediction:
    """Category of a listing from its photo (or its several, pooled) and text (`text`, or
    `name` and `description`) together."""
    data, checked = await read_photos(photo, settings), checked_text(listing, settings)
    encode = encoder(Kind.combined, data, checked, settings)
    artifacts, result = await answer(state, Kind.combined, encode)
    return Prediction.ranked(result.probabilities, artifacts, checked)


@router.post(EMBED_PATH, response_model=EmbedResponse)
async def embed(
    state: State,
    settings: Settings,
    listing: ListingForm,
    photo: list[UploadFile] | None = OPTIONAL_PHOTO,
) -> EmbedResponse:
    """The listing's embedding: image (photo only), text (text only) or combined (both)."""
    kind, encode = await query_encoder(photo, listing, settings)
    artifacts, result = await answer(state, kind, encode)
    return EmbedResponse(
        kind=kind, embedding=result.embedding.tolist(), model_version=artifacts.version
    )
