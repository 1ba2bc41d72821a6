"""`/v1/similar`: the catalogue listings nearest to a photo, a text, or both."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, UploadFile

from fbmr.core.contract import MAX_EXCLUDE_IDS, MAX_LOCATION_CHARS, SIMILAR_PATH
from fbmr.serving.http.deps import OPTIONAL_PHOTO, PROTECTED, Index, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES, ApiError
from fbmr.serving.http.inputs import (
    ListingForm,
    checked_exclude_ids,
    finite_price,
    query_encoder,
    query_kind,
)
from fbmr.serving.http.schemas import SimilarListing, SimilarResponse
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.service.similar import (
    known_category,
    loaded_index,
    searchable,
    similar_listings,
)

router = APIRouter(dependencies=PROTECTED, responses=ERROR_RESPONSES)


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
    photo: list[UploadFile] | None = OPTIONAL_PHOTO,
    k: int = Form(10, description="How many similar listings."),
) -> SimilarResponse:
    """The k catalogue listings nearest to a photo, a text, or both, among those that pass the
    filters given (applied within the search, so k come back when k pass)."""
    if not 1 <= k <= settings.max_k:
        raise ApiError(422, f"k: must be between 1 and {settings.max_k}, got {k}")
    kind = query_kind(bool(photo), listing.given)
    known_category(where.category, state.artifacts())  # before any model call; again after it
    index = loaded_index(store, settings)
    searchable(index, kind)
    kind, encode = await query_encoder(photo, listing, settings)
    artifacts, hits = await similar_listings(state, index, kind, encode, k, where)
    return SimilarResponse(
        kind=kind,
        index_version=index.version,
        model_version=artifacts.version,
        listings=[
            SimilarListing(**hit.listing, score=hit.score, rank_score=hit.ranked_by) for hit in hits
        ],
    )
