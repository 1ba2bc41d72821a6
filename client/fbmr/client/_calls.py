"""The facade's requests, each described once: `_Call` (method, path, body, how to read the
answer) and one builder per API operation. `Client` and `AsyncClient` (`fbmr.client.client`)
send the same calls, so the sync and async APIs cannot drift apart; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from fbmr.client.errors import FbmrError, InvalidInput, error_for
from fbmr.client.photos import Photos, photo_bytes, photo_list
from fbmr.client.types import (
    CatalogueListing,
    Embedding,
    Listing,
    ListingStored,
    ModelVersions,
    Prediction,
    Readiness,
    Reload,
    Similar,
    SimilarFilter,
    Text,
)
from fbmr.core.contract import (
    EMBED_PATH,
    HEALTHZ_PATH,
    LISTING_PATH,
    MODEL_VERSION_PATH,
    PREDICT_COMBINED_PATH,
    PREDICT_IMAGE_PATH,
    PREDICT_TEXT_PATH,
    READYZ_PATH,
    RELOAD_INDEX_PATH,
    SIMILAR_PATH,
    ErrorCode,
    Kind,
    kind_of,
    listing_id_problem,
)

if TYPE_CHECKING:
    pass

R = TypeVar("R")


# repeated multipart `photo` parts: (field, (file name, bytes))
PhotoParts = list[tuple[str, tuple[str, bytes]]]


@dataclass(frozen=True)
class _Call(Generic[R]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], R]
    json: dict[str, Any] | None = None
    data: Mapping[str, str | list[str]] | None = None
    files: PhotoParts | None = None
    # statuses >= 400 that are answers rather than errors (/readyz says "not ready" with a 503)
    answers: frozenset[int] = field(default_factory=frozenset)
    retry: bool = True

    def request(self) -> dict[str, Any]:
        """The arguments of httpx's `request` for this call."""
        return {
            "method": self.method,
            "url": self.path,
            "json": self.json,
            "data": self.data,
            "files": self.files,
        }


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise FbmrError(
            f"not a JSON answer from {response.request.url} (is this the facade?)",
            response.status_code,
        ) from None
    if not isinstance(data, dict):
        raise FbmrError(f"unexpected answer from {response.request.url}", response.status_code)
    return data


def _photo_parts(photos: Photos) -> PhotoParts:
    """One `photo` part per photo (the facade pools a listing's several into one answer); too
    many is refused here, before any is read."""
    try:
        items = photo_list(photos)
    except ValueError as err:
        code = ErrorCode.too_many_photos if photos else ErrorCode.no_input
        raise InvalidInput(str(err), None, code) from None
    return [("photo", ("photo", photo_bytes(photo))) for photo in items]


def _text_fields(text: Text) -> dict[str, str]:
    return {"text": text} if isinstance(text, str) else text.fields()


def _query(
    photo: Photos | None, text: Text | None
) -> tuple[dict[str, str | list[str]], PhotoParts]:
    if photo is None and text is None:
        raise ValueError("give a photo, a text, or both")
    data: dict[str, str | list[str]] = {} if text is None else {**_text_fields(text)}
    return data, [] if photo is None else _photo_parts(photo)


def _prediction(response: httpx.Response) -> Prediction:
    return Prediction.from_json(_json(response))


def _predict_image(photo: Photos) -> _Call[Prediction]:
    return _Call("POST", PREDICT_IMAGE_PATH, _prediction, files=_photo_parts(photo))


def _predict_text(text: Text) -> _Call[Prediction]:
    return _Call("POST", PREDICT_TEXT_PATH, _prediction, json=_text_fields(text))


def _predict_combined(photo: Photos, text: Text) -> _Call[Prediction]:
    return _Call(
        "POST",
        PREDICT_COMBINED_PATH,
        _prediction,
        data=_text_fields(text),
        files=_photo_parts(photo),
    )


def _predict(photo: Photos | None, text: Text | None) -> _Call[Prediction]:
    if photo is None and text is None:
        raise ValueError("give a photo, a text, or both")
    kind = kind_of(photo is not None, text is not None)
    if kind is Kind.combined:
        assert photo is not None and text is not None
        return _predict_combined(photo, text)
    if kind is Kind.image:
        assert photo is not None
        return _predict_image(photo)
    assert text is not None
    return _predict_text(text)


def _embed(photo: Photos | None, text: Text | None) -> _Call[Embedding]:
    data, files = _query(photo, text)
    return _Call(
        "POST", EMBED_PATH, lambda r: Embedding.from_json(_json(r)), data=data, files=files
    )


def _similar(
    photo: Photos | None, text: Text | None, k: int, where: SimilarFilter | None
) -> _Call[Similar]:
    data, files = _query(photo, text)
    return _Call(
        "POST",
        SIMILAR_PATH,
        lambda r: Similar.from_json(_json(r)),
        data={**data, "k": str(k), **(where.fields() if where else {})},
        files=files,
    )


def _refusal(err: FbmrError | OSError) -> FbmrError:
    """Why a listing of a batch was not put: the facade's refusal, or its photo unreadable here."""
    if isinstance(err, FbmrError):
        return err
    return FbmrError(f"photo: {err}", None, ErrorCode.photo_missing)


def _listing_path(listing_id: str) -> str:
    """The listing's URL path; an id the facade would refuse is refused here, before sending
    (one with a slash would otherwise reach another route)."""
    if problem := listing_id_problem(listing_id):
        raise InvalidInput(problem, None, ErrorCode.listing_id_invalid)
    return LISTING_PATH.format(listing_id=quote(listing_id, safe=""))


def _put_listing(listing: Listing) -> _Call[ListingStored]:
    return _Call(
        "PUT",
        _listing_path(listing.id),
        lambda r: ListingStored.from_json(_json(r)),
        data=listing.fields(),
        files=None if listing.photo is None else _photo_parts(listing.photo),
    )


def _get_listing(listing_id: str) -> _Call[CatalogueListing]:
    return _Call(
        "GET",
        _listing_path(listing_id),
        lambda r: CatalogueListing.from_json(_json(r)),
    )


def _delete_listing(listing_id: str) -> _Call[str]:
    return _Call(
        "DELETE",
        _listing_path(listing_id),
        lambda r: str(_json(r)["index_version"]),
    )


def _health() -> _Call[bool]:
    return _Call("GET", HEALTHZ_PATH, lambda r: _json(r).get("status") == "ok", retry=False)


def _ready() -> _Call[Readiness]:
    return _Call(
        "GET",
        READYZ_PATH,
        lambda r: Readiness.from_json(_json(r), r.status_code == 200),
        answers=frozenset({503}),
        retry=False,
    )


def _reload_index() -> _Call[Reload]:
    return _Call("POST", RELOAD_INDEX_PATH, lambda r: Reload.from_json(_json(r)))


def _model_versions() -> _Call[ModelVersions]:
    return _Call("GET", MODEL_VERSION_PATH, lambda r: ModelVersions.from_json(_json(r)))


def _pin_model_version(version: int | None) -> _Call[ModelVersions]:
    return _Call(
        "PUT",
        MODEL_VERSION_PATH,
        lambda r: ModelVersions.from_json(_json(r)),
        json={"version": version},
        retry=False,  # a refused version is an answer, not a passing fault
    )


def _answer(call: _Call[R], response: httpx.Response) -> R:
    if response.status_code >= 400 and response.status_code not in call.answers:
        raise error_for(response.status_code, response.content, response.headers.get("Retry-After"))
    return call.read(response)
