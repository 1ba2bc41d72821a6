"""`Client` and `AsyncClient`: the facade's HTTP API as Python methods with typed results.

Each client holds one httpx connection pool for its lifetime (use it as a context manager, or
call `close`). Requests are described once (`_Call`: method, path, body, how to read the answer)
and sent by either client, so the sync and async APIs cannot drift apart. Answers >= 400 become
the typed errors of `fbmr.client.errors`; 503s and transport failures are retried under the
client's `RetryPolicy` (`fbmr.client.retry`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from fbmr.client.errors import FbmrError, InvalidInput, ServerUnreachable, error_for
from fbmr.client.photos import Photos, photo_bytes, photo_list
from fbmr.client.retry import DEFAULT_POLICY, TRANSIENT, RetryPolicy
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
    API_KEY_ENV,
    DEFAULT_FACADE_URL,
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
    from stamina._core import _RetryContextIterator

USER_AGENT = "fbmr-client/0.1"
R = TypeVar("R")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)  # the httpx client a facade client holds
T = TypeVar("T", httpx.BaseTransport, httpx.AsyncBaseTransport)  # and its transport


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


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    headers = {"User-Agent": USER_AGENT}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _answer(call: _Call[R], response: httpx.Response) -> R:
    if response.status_code >= 400 and response.status_code not in call.answers:
        raise error_for(response.status_code, response.content, response.headers.get("Retry-After"))
    return call.read(response)


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Transport failures as `ServerUnreachable` (retried, as any TRANSIENT error)."""
    try:
        yield
    except httpx.TransportError as err:
        what = "timed out" if isinstance(err, httpx.TimeoutException) else "unreachable"
        if isinstance(err, httpx.ConnectError) and "refused" in str(err).lower():
            what = "refused the connection (nothing listens there?)"
        message = f"{url} {what}: {type(err).__name__}: {err}".rstrip(": ")
        unreachable = ServerUnreachable(message)
        unreachable.refused = isinstance(err, httpx.ConnectError)
        raise unreachable from err


class _Base(Generic[H, T]):
    """What both clients share: their settings, the connection pool's and the retries."""

    def __init__(
        self,
        url: str = DEFAULT_FACADE_URL,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy = DEFAULT_POLICY,
        transport: T | None = None,
        max_connections: int = 100,
    ) -> None:
        """`url`: the facade; `api_key`: its bearer token (default: $FBMR_API_KEY); `timeout_s`:
        of one request; `retry`: how 503s and transport failures are retried; `transport`:
        httpx's (tests); `max_connections`: of the pool, all kept alive."""
        self.url = url.rstrip("/")
        self.retry = retry
        self._http: H = self._open(
            transport,
            base_url=self.url,
            headers=_headers(api_key),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def _open(self, transport: T | None, **options: Any) -> H:
        """The httpx client of this kind."""
        raise NotImplementedError

    def _attempts(self, call: _Call[Any]) -> _RetryContextIterator:
        """The retry context for `call` (iterated sync or async by the client's `_send`)."""
        return (self.retry if call.retry else RetryPolicy.none()).context(TRANSIENT)

    def _reaching(self) -> AbstractContextManager[None]:
        return _reaching(self.url)


class Client(_Base[httpx.Client, httpx.BaseTransport]):
    """The facade's API, blocking. Thread-safe (httpx's pool is)."""

    def _open(self, transport: httpx.BaseTransport | None, **options: Any) -> httpx.Client:
        return httpx.Client(transport=transport, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[R]) -> R:
        for attempt in self._attempts(call):
            with attempt, self._reaching():
                return _answer(call, self._http.request(**call.request()))
        raise AssertionError("unreachable")

    def predict(self, photo: Photos | None = None, text: Text | None = None) -> Prediction:
        """The category from a photo, a text or both (image, text or combined model); a list
        of a listing's photos gets one answer pooled over them."""
        return self._send(_predict(photo, text))

    def predict_image(self, photo: Photos) -> Prediction:
        return self._send(_predict_image(photo))

    def predict_text(self, text: Text) -> Prediction:
        return self._send(_predict_text(text))

    def predict_combined(self, photo: Photos, text: Text) -> Prediction:
        return self._send(_predict_combined(photo, text))

    def embed(self, photo: Photos | None = None, text: Text | None = None) -> Embedding:
        """The listing's embedding, in the space of what it is given."""
        return self._send(_embed(photo, text))

    def similar(
        self,
        photo: Photos | None = None,
        text: Text | None = None,
        k: int = 10,
        where: SimilarFilter | None = None,
    ) -> Similar:
        """The `k` catalogue listings nearest to a photo, a text or both (among those that
        pass `where`)."""
        return self._send(_similar(photo, text, k, where))

    def put_listing(self, listing: Listing) -> ListingStored:
        """Add `listing` to the live similar-listing index, or replace the one of its id."""
        return self._send(_put_listing(listing))

    def get_listing(self, listing_id: str) -> CatalogueListing:
        """The listing as the live index holds it; `NotFound` when it holds none of this id."""
        return self._send(_get_listing(listing_id))

    def delete_listing(self, listing_id: str) -> str:
        """Remove a listing (sold, withdrawn) from the live index; returns the index version.
        `NotFound` when the index does not hold it."""
        return self._send(_delete_listing(listing_id))

    def put_listings(
        self, listings: Iterable[Listing], concurrency: int = 8
    ) -> list[ListingStored | FbmrError]:
        """Put many listings, `concurrency` at a time; a listing refused is returned as its
        error, in its place, and the others go on."""

        def put(listing: Listing) -> ListingStored | FbmrError:
            try:
                return self.put_listing(listing)
            except (FbmrError, OSError) as err:
                return _refusal(err)

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(put, listings))

    def health(self) -> bool:
        """Whether the facade's process answers (GET /healthz); not retried."""
        return self._send(_health())

    def ready(self) -> Readiness:
        """Whether Triton, the models and the index are ready (GET /readyz); not retried."""
        return self._send(_ready())

    def reload_index(self) -> Reload:
        """Load the index's current version now (POST /v1/admin/reload-index)."""
        return self._send(_reload_index())

    def model_versions(self) -> ModelVersions:
        """The model version in use, the pin and the refused versions."""
        return self._send(_model_versions())

    def pin_model_version(self, version: int | None) -> ModelVersions:
        """Serve exported `version` from now on, checked as any new version (None: follow the
        newest export again); a refused version raises with its cause."""
        return self._send(_pin_model_version(version))


class AsyncClient(_Base[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The facade's API for asyncio; one client serves any number of concurrent calls."""

    def _open(
        self, transport: httpx.AsyncBaseTransport | None, **options: Any
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[R]) -> R:
        async for attempt in self._attempts(call):
            with attempt, self._reaching():
                return _answer(call, await self._http.request(**call.request()))
        raise AssertionError("unreachable")

    async def predict(self, photo: Photos | None = None, text: Text | None = None) -> Prediction:
        """The category from a photo, a text or both (image, text or combined model); a list
        of a listing's photos gets one answer pooled over them."""
        return await self._send(_predict(photo, text))

    async def predict_image(self, photo: Photos) -> Prediction:
        return await self._send(_predict_image(photo))

    async def predict_text(self, text: Text) -> Prediction:
        return await self._send(_predict_text(text))

    async def predict_combined(self, photo: Photos, text: Text) -> Prediction:
        return await self._send(_predict_combined(photo, text))

    async def embed(self, photo: Photos | None = None, text: Text | None = None) -> Embedding:
        """The listing's embedding, in the space of what it is given."""
        return await self._send(_embed(photo, text))

    async def similar(
        self,
        photo: Photos | None = None,
        text: Text | None = None,
        k: int = 10,
        where: SimilarFilter | None = None,
    ) -> Similar:
        """The `k` catalogue listings nearest to a photo, a text or both (among those that
        pass `where`)."""
        return await self._send(_similar(photo, text, k, where))

    async def put_listing(self, listing: Listing) -> ListingStored:
        """Add `listing` to the live similar-listing index, or replace the one of its id."""
        return await self._send(_put_listing(listing))

    async def get_listing(self, listing_id: str) -> CatalogueListing:
        """The listing as the live index holds it; `NotFound` when it holds none of this id."""
        return await self._send(_get_listing(listing_id))

    async def delete_listing(self, listing_id: str) -> str:
        """Remove a listing (sold, withdrawn) from the live index; returns the index version.
        `NotFound` when the index does not hold it."""
        return await self._send(_delete_listing(listing_id))

    async def put_listings(
        self, listings: Iterable[Listing], concurrency: int = 8
    ) -> list[ListingStored | FbmrError]:
        """Put many listings, `concurrency` at a time; a listing refused is returned as its
        error, in its place, and the others go on."""
        slots = asyncio.Semaphore(concurrency)

        async def put(listing: Listing) -> ListingStored | FbmrError:
            async with slots:
                try:
                    return await self.put_listing(listing)
                except (FbmrError, OSError) as err:
                    return _refusal(err)

        return list(await asyncio.gather(*(put(listing) for listing in listings)))

    async def health(self) -> bool:
        """Whether the facade's process answers (GET /healthz); not retried."""
        return await self._send(_health())

    async def ready(self) -> Readiness:
        """Whether Triton, the models and the index are ready (GET /readyz); not retried."""
        return await self._send(_ready())

    async def reload_index(self) -> Reload:
        """Load the index's current version now (POST /v1/admin/reload-index)."""
        return await self._send(_reload_index())

    async def model_versions(self) -> ModelVersions:
        """The model version in use, the pin and the refused versions."""
        return await self._send(_model_versions())

    async def pin_model_version(self, version: int | None) -> ModelVersions:
        """Serve exported `version` from now on (None: the newest again); see Client."""
        return await self._send(_pin_model_version(version))
