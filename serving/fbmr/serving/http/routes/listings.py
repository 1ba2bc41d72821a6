"""`PUT`, `GET` and `DELETE /v1/listings/{id}`: listings posted, read back and sold while the
facade serves. The routes check the request; the work (embed, log, apply) is done in
`fbmr.serving.service.listings`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request, UploadFile
from starlette.convertors import Convertor, register_url_convertor

from fbmr.core.contract import (
    LISTING_ID_PATTERN,
    LISTING_ID_RULE,
    LISTING_PATH,
    MAX_LISTING_NAME_CHARS,
    MAX_LOCATION_CHARS,
    Kind,
)
from fbmr.serving.http.deps import OPTIONAL_PHOTO, PROTECTED, Index, Settings, State
from fbmr.serving.http.errors import ERROR_RESPONSES, FORM_TYPES, ApiError, media_type
from fbmr.serving.http.inputs import (
    checked_listing_id,
    checked_text,
    encoder,
    finite_price,
    read_photos,
)
from fbmr.serving.http.schemas import CatalogueListing, ListingDeleted, ListingStored, TextQuery
from fbmr.serving.service import listings
from fbmr.serving.service.answers import Encoder
from fbmr.serving.service.similar import known_category, loaded_index

router = APIRouter(dependencies=PROTECTED, responses=ERROR_RESPONSES)


class _AnyId(Convertor[str]):
    """A path's listing id: anything to the end of the path, slashes and line breaks included,
    so that an id outside the rule ("shop/123", "a\\nb") reaches the check and gets a 422
    saying so, never a route's bare 404."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_listing_id", _AnyId())
ROUTE = LISTING_PATH.replace("{listing_id}", "{listing_id:any_listing_id}")


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


@router.put(ROUTE, response_model=ListingStored)
async def put_listing(
    state: State,
    settings: Settings,
    store: Index,
    listing_id: ListingId,
    request: Request,
    photo: list[UploadFile] | None = OPTIONAL_PHOTO,
    # required, but checked here: FastAPI reads an empty form field as a missing one
    name: str | None = Form(
        None,
        max_length=MAX_LISTING_NAME_CHARS,
        description="The listing's name, as the marketplace wrote it (required).",
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
    if name is None or not name.strip():
        message = "name: required; give the listing's name, as the marketplace wrote it"
        if media_type(request) not in FORM_TYPES:
            sent = media_type(request) or "a body without Content-Type"
            message += f"; this endpoint takes multipart/form-data (photos, fields), not {sent}"
        elif "name" in await request.form():  # parsed already, for the fields above
            message = message.replace("required", "empty", 1)
        raise ApiError(422, message)
    finite_price("price", price)
    known_category(category, state.artifacts())  # before any model call; again after it
    index = loaded_index(store, settings)
    listings.photo_needed(index, bool(photo))
    data = await read_photos(photo, settings) if photo else []
    text = checked_text(TextQuery(name=name, description=description), settings)

    def encode(kind: Kind) -> Encoder:
        return encoder(kind, data, text, settings)

    listing = listings.NewListing(listing_id, name, description, category, price, location)
    stored = await listings.put_listing(state, index, listing, data, encode)
    return ListingStored(
        id=listing_id,
        category=stored.category,
        replaced=stored.replaced,
        index_version=stored.index_version,
        model_version=stored.model_version,
    )


@router.get(ROUTE, response_model=CatalogueListing)
async def get_listing(settings: Settings, store: Index, listing_id: ListingId) -> CatalogueListing:
    """A listing as the similar-listing index holds it (put, or built from the catalogue); a 404
    when it holds none of this id."""
    found, index_version = await listings.get_listing(store, settings, listing_id)
    return CatalogueListing(**found, index_version=index_version)


@router.delete(ROUTE, response_model=ListingDeleted)
async def delete_listing(settings: Settings, store: Index, listing_id: ListingId) -> ListingDeleted:
    """Remove a listing (sold, withdrawn) from the similar-listing index; it is never returned
    once this answers."""
    index_version = await listings.delete_listing(store, settings, listing_id)
    return ListingDeleted(id=listing_id, index_version=index_version)
