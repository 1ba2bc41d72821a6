"""`Client` and `AsyncClient`: the facade's HTTP API as Python methods with typed results.

Each client holds one httpx connection pool for its lifetime (use it as a context manager, or
call `close`). Requests are described once (`_Call` in `fbmr.client._calls`: method, path, body,
how to read the answer) and sent by either client, so the sync and async APIs cannot drift
apart. Answers >= 400 become the typed errors of `fbmr.client.errors`; 503s and transport
failures are retried under the client's `RetryPolicy` (`fbmr.client.retry`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from fbmr.client._base import _Base
from fbmr.client._calls import (
    R,
    _answer,
    _Call,
    _delete_listing,
    _embed,
    _get_listing,
    _health,
    _model_versions,
    _pin_model_version,
    _predict,
    _predict_combined,
    _predict_image,
    _predict_text,
    _put_listing,
    _ready,
    _refusal,
    _reload_index,
    _similar,
)
from fbmr.client.errors import FbmrError
from fbmr.client.photos import Photos
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
