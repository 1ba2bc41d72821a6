"""`/v1/similar`: the catalogue listings nearest to a photo, a text, or both."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    MAX_EXCLUDE_IDS,
    MAX_LOCATION_CHARS,
    SIMILAR_PATH,
    ErrorCode,
    Kind,
)
from fbmr.serving import request_context
from fbmr.serving.http.deps import PROTECTED, Index, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES, ApiError, unavailable
from fbmr.serving.http.inputs import (
    ListingForm,
    checked_exclude_ids,
    finite_price,
    query_encoder,
    query_kind,
)
from fbmr.serving.http.routes.predict import OPTIONAL_PHOTO, answer
from fbmr.serving.http.schemas import SimilarListing, SimilarResponse
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.live_index import LiveIndex
from fbmr.serving.index.store import IndexStore
from fbmr.serving.settings import FacadeSettings

router = APIRouter(dependencies=PROTECTED, responses=ERROR_RESPONSES)

# what a query must hold to be answered in each embedding space
QUERY_INPUTS = {
    Kind.image: "a photo only",
    Kind.text: "a text only",
    Kind.combined: "a photo and a text",
}


def loaded_index(store: IndexStore, settings: FacadeSettings) -> LiveIndex:
    """The index version in use; a request keeps it even if a new one is swapped in."""
    index = store.current
    if index is None:
        raise unavailable(
            "no similar-listing index loaded yet (fbmr index build)",
            settings.retry_after_s,
            ErrorCode.index_unavailable,
        )
    return index


def same_embedding_space(
    index: LiveIndex, artifacts: ModelArtifacts, settings: FacadeSettings
) -> None:
    """A 503 unless `index` holds embeddings of the model version that answered: vectors from
    two embedding spaces are never compared or mixed."""
    if index.model_version not in (None, artifacts.version):
        raise unavailable(
            f"the similar-listing index {index.version} holds embeddings of model version "
            f"{index.model_version}, and version {artifacts.version} is now served: rebuild "
            "the index for it (fbmr index build)",
            settings.retry_after_s,
            ErrorCode.index_unavailable,
        )


def known_category(category: str | None, artifacts: ModelArtifacts) -> None:
    """A 422 unless `category` (when given) is one the model version predicts."""
    if category is not None and category not in artifacts.labels.classes:
        raise ApiError(
            422,
            f"category: {category!r} is not a category of model version {artifacts.version}; "
            # as JSON strings: the names themselves hold commas ("Clothes, Footwear & ...")
            f"one of: {json.dumps(list(artifacts.labels.classes))}",
        )


def listing_filter(
    category: str | None = Form(None, description="Only listings of this category."),
    price_min: float | None = Form(None, description="Only listings priced at least this."),
    price_max: float | None = Form(None, description="Only listings priced at most this."),
    location: str | None = Form(
        None,
        max_length=MAX_LOCATION_CHARS,
        description="Only listings whose location contains this (case ignored).",
    ),
    exclude_id: list[str] | None = Form(
        None,
        description="Leave out these listing ids (repeat the field for several, at most "
        f"{MAX_EXCLUDE_IDS}), e.g. the listing the query is about.",
    ),
) -> ListingFilter:
    """The filter of a `/v1/similar` query, from its form fields (a route dependency)."""
    finite_price("price_min", price_min)
    finite_price("price_max", price_max)
    if price_min is not None and price_max is not None and price_min > price_max:
        raise ApiError(422, f"price_min ({price_min}) is above price_max ({price_max})")
    return ListingFilter(
        category=category or None,
        price_min=price_min,
        price_max=price_max,
        location=location or None,
        exclude_ids=checked_exclude_ids(exclude_id or []),
    )


Filter = Annotated[ListingFilter, Depends(listing_filter)]


@router.post(SIMILAR_PATH, response_model=SimilarResponse)
async def similar(
    state: State,
    settings: Settings,
    store: Index,
    listing: ListingForm,
    where: Filter,
    photo: UploadFile | None = OPTIONAL_PHOTO,
    k: int = Form(10, description="How many similar listings."),
) -> SimilarResponse:
    """The k catalogue listings nearest to a photo, a text, or both, among those that pass the
    filters given (applied within the search, so k come back when k pass)."""
    if not 1 <= k <= settings.max_k:
        raise ApiError(422, f"k: must be between 1 and {settings.max_k}, got {k}")
    kind = query_kind(photo is not None, listing.given)
    index = loaded_index(store, settings)
    if kind not in index.kinds:
        accepted = " or ".join(QUERY_INPUTS[k] for k in index.kinds)
        raise ApiError(
            422,
            f"this index holds no {kind.value} embeddings, so it cannot answer a query "
            f"with {QUERY_INPUTS[kind]}; send {accepted}",
        )
    kind, encode = await query_encoder(photo, listing, settings)
    artifacts, result = await answer(state, kind, encode)
    same_embedding_space(index, artifacts, settings)
    known_category(where.category, artifacts)
    # FAISS holds the GIL only briefly but a search over a large index takes milliseconds:
    # off the event loop, so other requests keep flowing meanwhile.
    hits = await run_in_threadpool(index.search, kind, result.embedding, k, where)
    if info := request_context.current():
        info.index_version = index.version
    return SimilarResponse(
        kind=kind,
        index_version=index.version,
        model_version=artifacts.version,
        listings=[SimilarListing(**hit.listing, score=hit.score) for hit in hits],
    )
