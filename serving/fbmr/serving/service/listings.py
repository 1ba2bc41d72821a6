"""Listings put, read back and deleted while the facade serves.

A put listing is embedded by the model version in use, in every kind the index holds (its photo,
its text, both), written to the index directory's update log (durably: this returns after the
fsync) and added to the live index; a deleted one is never returned again. The other workers
apply the same log within `updates_poll_s`. Nothing is written for a put that fails: the photo
and the text are checked, and embedded, first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ErrorCode, Kind
from fbmr.core.listing import PhotoCell, clean_field, clean_product_name, photo_cell
from fbmr.serving.index.live_index import LiveIndex
from fbmr.serving.index.store import IndexStore
from fbmr.serving.index.updates import Update, UpdateLog
from fbmr.serving.service.answers import Encoder, Inputs, answer
from fbmr.serving.service.errors import Invalid, NotFound, Unavailable
from fbmr.serving.service.similar import known_category, loaded_index, same_embedding_space
from fbmr.serving.service.state import FacadeState
from fbmr.serving.settings import FacadeSettings


@dataclass(frozen=True)
class NewListing:
    """A listing as the marketplace sent it, its fields checked by the caller."""

    id: str
    name: str
    description: str
    category: str | None
    price: float | None
    location: str | None


@dataclass(frozen=True)
class Stored:
    category: str  # the one given, else the predicted one
    replaced: bool  # the index held a listing of this id before
    index_version: str
    model_version: int


def photo_needed(index: LiveIndex, has_photo: bool) -> None:
    """Invalid when the index searches by photo and the listing comes without one."""
    if (Kind.image in index.kinds or Kind.combined in index.kinds) and not has_photo:
        searched = ", ".join(kind.value for kind in index.kinds)
        raise Invalid(f"photo: required, since the index searches by {searched}")


async def put_listing(
    state: FacadeState,
    index: LiveIndex,
    listing: NewListing,
    photos: Sequence[bytes],
    encoder: Callable[[Kind], Encoder],
) -> Stored:
    """Embed `listing` in every kind `index` holds (`encoder` builds each kind's inputs), then
    log it and apply it; searchable once this returns."""
    settings = state.settings
    kinds = list(index.kinds)
    # Every kind's inputs are built before any is sent: a photo that cannot be read is refused
    # before a model is called (sent at once, the text's call could fail or answer first).
    first = state.artifacts()
    built = {kind: await encoder(kind)(first) for kind in kinds}

    def encode(kind: Kind) -> Encoder:
        async def inputs(artifacts: ModelArtifacts) -> Inputs:
            # built again only for a version switched to meanwhile
            return built[kind] if artifacts is first else await encoder(kind)(artifacts)

        return inputs

    answers = await asyncio.gather(*(answer(state, kind, encode(kind)) for kind in kinds))
    artifacts = answers[0][0]
    for other, _ in answers[1:]:
        if other.version != artifacts.version:  # a model version switch between the calls
            raise Unavailable("the model version changed meanwhile, retry", settings.retry_after_s)
    same_embedding_space(index, artifacts, settings)
    known_category(listing.category, artifacts)
    best = answers[kinds.index(Kind.combined)] if Kind.combined in kinds else answers[0]
    category = listing.category or artifacts.labels.rank(best[1].probabilities)[0][0]
    fields: dict[str, Any] = {
        "id": listing.id,
        "name": clean_product_name(listing.name),
        "category": category,
        "price": listing.price,
        "location": clean_field(listing.location) or None,
    }
    replaced = listing.id in index
    log = index.updates
    source = {
        "name": listing.name,
        "description": listing.description,
        "photo": await _saved(log, photos),
    }
    update = Update(
        "put",
        listing.id,
        model_version=artifacts.version,
        listing=fields,
        source=source,
        vectors={kind: result.embedding for kind, (_, result) in zip(kinds, answers, strict=True)},
    )
    await to_thread.run_sync(log.append, update)
    await to_thread.run_sync(index.catch_up)
    return Stored(category, replaced, index.version, artifacts.version)


async def _saved(log: UpdateLog, photos: Sequence[bytes]) -> PhotoCell:
    """The listing's photos kept for the next rebuild, by name, as its update records them."""
    return photo_cell([await to_thread.run_sync(log.save_photo, photo) for photo in photos])


def _not_found(listing_id: str) -> NotFound:
    return NotFound(f"no listing {listing_id!r} in the index", ErrorCode.listing_not_found)


async def get_listing(
    store: IndexStore, settings: FacadeSettings, listing_id: str
) -> tuple[dict[str, Any], str]:
    """The listing as the index holds it (put, or built from the catalogue), and the index
    version; NotFound when it holds none of this id."""
    index = loaded_index(store, settings)
    await to_thread.run_sync(index.catch_up)  # it may have been put by another worker just now
    found = await to_thread.run_sync(index.get, listing_id)
    if found is None:
        raise _not_found(listing_id)
    return found, index.version


async def delete_listing(store: IndexStore, settings: FacadeSettings, listing_id: str) -> str:
    """Remove the listing (sold, withdrawn): never returned once this returns. The index
    version; NotFound when it holds none of this id."""
    index = loaded_index(store, settings)
    await to_thread.run_sync(index.catch_up)  # it may have been put by another worker just now
    if listing_id not in index:
        raise _not_found(listing_id)
    await to_thread.run_sync(index.updates.append, Update("delete", listing_id))
    await to_thread.run_sync(index.catch_up)
    return index.version
