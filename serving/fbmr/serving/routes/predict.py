"""`/v1/predict/{image,text,combined}` and `/v1/embed`: a listing's category and its embedding."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from numpy.typing import NDArray

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import IMAGE, TOKEN_IDS, Kind
from fbmr.serving.deps import PROTECTED, Artifacts, Models, Settings
from fbmr.serving.errors import ERROR_RESPONSES, unavailable
from fbmr.serving.inference import Inference, TritonModels, TritonUnavailable
from fbmr.serving.inputs import photo_tensor, query_inputs, text_tensor
from fbmr.serving.schemas import EmbedResponse, Prediction, TextQuery
from fbmr.serving.settings import FacadeSettings

router = APIRouter(prefix="/v1", dependencies=PROTECTED, responses=ERROR_RESPONSES)

PHOTO = File(..., description="The listing's photo.")
TEXT = Form(..., description="The listing's name and/or description.")
OPTIONAL_PHOTO = File(None, description="The listing's photo.")
OPTIONAL_TEXT = Form(None, description="The listing's name and/or description.")


async def infer(
    models: TritonModels, kind: Kind, inputs: dict[str, NDArray[Any]], settings: FacadeSettings
) -> Inference:
    """Triton's answer, or a 503 with Retry-After while Triton cannot give one."""
    try:
        return await models.infer(kind, inputs)
    except TritonUnavailable as err:
        raise unavailable(
            f"model server unavailable, retry later ({err})", settings.retry_after_s
        ) from None


def prediction(probabilities: NDArray[np.float32], artifacts: ModelArtifacts) -> Prediction:
    ranked = artifacts.labels.rank(probabilities)
    return Prediction(
        pred=ranked[0][0], classes=[c for c, _ in ranked], probabilities=[p for _, p in ranked]
    )


@router.post("/predict/image", response_model=Prediction)
async def predict_image(
    models: Models, artifacts: Artifacts, settings: Settings, photo: UploadFile = PHOTO
) -> Prediction:
    """Category of a listing from its photo."""
    inputs = {IMAGE: await photo_tensor(photo, artifacts, settings)}
    result = await infer(models, Kind.image, inputs, settings)
    return prediction(result.probabilities, artifacts)


@router.post("/predict/text", response_model=Prediction)
async def predict_text(
    body: TextQuery, models: Models, artifacts: Artifacts, settings: Settings
) -> Prediction:
    """Category of a listing from its name and/or description."""
    inputs = {TOKEN_IDS: text_tensor(body.text, artifacts, settings)}
    result = await infer(models, Kind.text, inputs, settings)
    return prediction(result.probabilities, artifacts)


@router.post("/predict/combined", response_model=Prediction)
async def predict_combined(
    models: Models,
    artifacts: Artifacts,
    settings: Settings,
    photo: UploadFile = PHOTO,
    text: str = TEXT,
) -> Prediction:
    """Category of a listing from its photo and text together."""
    inputs: dict[str, NDArray[Any]] = {
        IMAGE: await photo_tensor(photo, artifacts, settings),
        TOKEN_IDS: text_tensor(text, artifacts, settings),
    }
    result = await infer(models, Kind.combined, inputs, settings)
    return prediction(result.probabilities, artifacts)


@router.post("/embed", response_model=EmbedResponse)
async def embed(
    models: Models,
    artifacts: Artifacts,
    settings: Settings,
    photo: UploadFile | None = OPTIONAL_PHOTO,
    text: str | None = OPTIONAL_TEXT,
) -> EmbedResponse:
    """The listing's embedding: image (photo only), text (text only) or combined (both)."""
    kind, inputs = await query_inputs(photo, text, artifacts, settings)
    result = await infer(models, kind, inputs, settings)
    return EmbedResponse(kind=kind, embedding=result.embedding.tolist())
