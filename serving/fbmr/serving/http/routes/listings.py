"""`PUT`, `GET` and `DELETE /v1/listings/{id}`: listings posted, read back and sold while the
facade serves.

A put listing is embedded by the model version in use, in every kind the index holds (its photo,
its text, both), written to the index directory's update log (durably: the answer comes after
the fsync) and added to the live index; a deleted one is never returned again. The other
workers apply the same log within `updates_poll_s`. Nothing is written for a request that fails:
the photo and the text are checked, and embedded, first.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, UploadFile
from starlette.concurrency import run_in_threadpool

from fbmr.core.contract import (
    LISTING_ID_PATTERN,
    LISTING_ID_RULE,
    LISTING_PATH,
    MAX_LISTING_NAME_CHARS,
    MAX_LOCATION_CHARS,
    ErrorCode,
    Kind,
)
from fbmr.core.listing import clean_field, clean_product_name
from fbmr.serving.http.deps import PROTECTED, Index, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES, ApiError, unavailable
from fbmr.serving.http.inputs import (
    checked_listing_id,
    checked_text,
    encoder,
    finite_price,
    read_photo,
)
from fbmr.serving.http.routes.predict import OPTIONAL_PHOTO, answer, prediction
from fbmr.serving.http.routes.similar import known_category, loaded_index, same_embedding_space
from fbmr.serving.http.schemas import CatalogueListing, ListingDeleted, ListingStored, TextQuery
from fbmr.serving.index.updates import Update

router = APIRouter(dependencies=PROTECTED, responses=ERROR_RESPONSES)


def listing_id(
    listing_id: str = Path(
        ...,
        description=f"The listing's id: {LISTING_ID_RULE}.",
        json_schema_extra={"pattern": LISTING_ID_PATTERN},
    ),
) -> str:
    """The path's listing id, checked against the id rule (a 422 with `listing_id_invalid`)."""
    return checked_listing_id(listing_id)


ListingId = Annotated[str, Depends(listing_id)]


@router.put(LISTING_PATH, response_model=ListingStored)
async def put_listing(
    state: State,
    settings: Settings,
    store: Index,
    listing_id: ListingId,
    photo: UploadFile | None = OPTIONAL_PHOTO,
    name: str = Form(
        ...,
        max_length=MAX_LISTING_NAME_CHARS,
        description="The listing's name, as the marketplace wrote it.",
    ),
    description: str = Form("", description="The listing's description."),
    category: str | None = Form(None, description="Its category; by default the predicted one."),
    price: float | None = Form(None, description="Its price (0 or more)."),
    location: str | None = Form(
        None,
        max_length=MAX_LOCATION_CHARS,
        description="Where it is, e.g. 'Leeds, West Yorkshire'.",
    ),
) -> ListingStored:
    """Add a listing to the similar-listing index, or replace the listing of this id; it is
    searchable once this answers."""
    finite_price("price", price)
    index = loaded_index(store, settings)
    needs_photo = Kind.image in index.kinds or Kind.combined in index.kinds
    if needs_photo and photo is None:
        searched = ", ".join(kind.value for kind in index.kinds)
        raise ApiError(422, f"photo: required, since the index searches by {searched}")
    data = await read_photo(photo, settings) if photo is not None else None
    text = checked_text(TextQuery(name=name, description=description), settings)
    kinds = list(index.kinds)
    answers = await asyncio.gather(
        *(answer(state, kind, encoder(kind, data, text, settings)) for kind in kinds)
    )
    artifacts = answers[0][0]
    for other, _ in answers[1:]:
        if other.version != artifacts.version:  # a model version switch between the calls
            raise unavailable("the model version changed meanwhile, retry", settings.retry_after_s)
    same_embedding_space(index, artifacts, settings)
    known_category(category, artifacts)
    best = answers[kinds.index(Kind.combined)] if Kind.combined in kinds else answers[0]
    category = category or prediction(best[1].probabilities, artifacts).pred
    listing = {
        "id": listing_id,
        "name": clean_product_name(name),
        "category": category,
        "price": price,
        "location": clean_field(location) or None,
    }
    replaced = listing_id in index
    log = index.updates
    source = {
        "name": name,
        "description": description,
        "photo": await run_in_threadpool(log.save_photo, data) if data is not None else None,
    }
    update = Update(
        "put",
        listing_id,
        model_version=artifacts.version,
        listing=listing,
        source=source,
        vectors={kind: result.embedding for kind, (_, result) in zip(kinds, answers, strict=True)},
    )
    await run_in_threadpool(log.append, update)
    await run_in_threadpool(index.catch_up)
    return ListingStored(
        id=listing_id,
        category=category,
        replaced=replaced,
        index_version=index.version,
        model_version=artifacts.version,
    )


@router.get(LISTING_PATH, response_model=CatalogueListing)
async def get_listing(settings: Settings, store: Index, listing_id: ListingId) -> CatalogueListing:
    """A listing as the similar-listing index holds it (put, or built from the catalogue); a 404
    when it holds none of this id."""
    index = loaded_index(store, settings)
    await run_in_threadpool(index.catch_up)  # it may have been put by another worker just now
    found = await run_in_threadpool(index.get, listing_id)
    if found is None:
        raise ApiError(
            404, f"no listing {listing_id!r} in the index", code=ErrorCode.listing_not_found
        )
    return CatalogueListing(**found, index_version=index.version)


@router.delete(LISTING_PATH, response_model=ListingDeleted)
async def delete_listing(settings: Settings, store: Index, listing_id: ListingId) -> ListingDeleted:
    """Remove a listing (sold, withdrawn) from the similar-listing index; it is never returned
    once this answers."""
    index = loaded_index(store, settings)
    await run_in_threadpool(index.catch_up)  # it may have been put by another worker just now
    if listing_id not in index:
        raise ApiError(
            404, f"no listing {listing_id!r} in the index", code=ErrorCode.listing_not_found
        )
    await run_in_threadpool(index.updates.append, Update("delete", listing_id))
    await run_in_threadpool(index.catch_up)
    return ListingDeleted(id=listing_id, index_version=index.version)
