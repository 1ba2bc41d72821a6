"""The seed-compatible API: `POST /image`, `/text` and `/combined`, as the seed servers answer
them (a multipart `image` upload, a form field `text`; `{"pred": ..., "classes": [...]}` with
classes ranked), so that moving from a seed server is a change of host name. A thin alias over
the `/v1` prediction routes: same checks, same models, same answers (which also carry the
probabilities and the model version)."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile

from fbmr.core.contract import Kind
from fbmr.serving.http.deps import PROTECTED, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES
from fbmr.serving.http.inputs import checked_text, encoder, read_photos
from fbmr.serving.http.schemas import Prediction, TextQuery
from fbmr.serving.service.answers import answer

router = APIRouter(tags=["seed-compatible"], dependencies=PROTECTED, responses=ERROR_RESPONSES)

IMAGE = File(
    ...,
    description="The listing's photo (the seed API's field name); repeated for its several.",
)
TEXT = Form(..., description="The listing's name and/or description.")


async def _predict(
    state: State,
    settings: Settings,
    kind: Kind,
    image: list[UploadFile] | None,
    text: str | None,
) -> Prediction:
    data = await read_photos(image, settings) if image else []
    checked = checked_text(TextQuery(text=text), settings) if text is not None else None
    artifacts, result = await answer(state, kind, encoder(kind, data, checked, settings))
    return Prediction.ranked(result.probabilities, artifacts, checked)


@router.post("/image", response_model=Prediction)
async def seed_image(
    state: State, settings: Settings, image: list[UploadFile] = IMAGE
) -> Prediction:
    """Seed-compatible `/v1/predict/image`."""
    return await _predict(state, settings, Kind.image, image, None)


@router.post("/text", response_model=Prediction)
async def seed_text(state: State, settings: Settings, text: str = TEXT) -> Prediction:
    """Seed-compatible `/v1/predict/text`, with the text as a form field."""
    return await _predict(state, settings, Kind.text, None, text)


@router.post("/combined", response_model=Prediction)
async def seed_combined(
    state: State, settings: Settings, image: list[UploadFile] = IMAGE, text: str = TEXT
) -> Prediction:
    """Seed-compatible `/v1/predict/combined`."""
    return await _predict(state, settings, Kind.combined, image, text)
