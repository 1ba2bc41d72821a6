"""fbmr.client: the facade's API from Python, and batch scoring of whole catalogues (no torch).

    from fbmr.client import Client
    with Client("http://127.0.0.1:8080") as client:
        prediction = client.predict(photo="chair.jpg", text="Oak dining chair")
        print(prediction.pred, prediction.top(3))
        # or the listing's fields, as the marketplace wrote them
        client.predict_text(ListingText(name="Oak chair | in Leeds | Gumtree", description="..."))

`AsyncClient` is the same API for asyncio. Errors are typed (`fbmr.client.errors`); 503s and
transport failures are retried (`fbmr.client.retry`). Whole tables are `fbmr.client.batch`'s:
`fbmr score` scores a catalogue resumably through the facade, straight to Triton
(`fbmr.client.batch.TritonScorer`) or on Ray, and `fbmr listings put` puts a table of listings.

Names are imported on first use, so `fbmr --help` (which imports `fbmr.client.cli`) does not
pay for httpx and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fbmr.client._lazy import lazy_names

if TYPE_CHECKING:
    from fbmr.client.client import AsyncClient, Client
    from fbmr.client.errors import (
        ClientError,
        FbmrError,
        InvalidInput,
        NotFound,
        ServerError,
        ServerUnreachable,
        TooLarge,
        Unauthorised,
        Unavailable,
    )
    from fbmr.client.retry import RetryPolicy
    from fbmr.client.types import (
        CatalogueListing,
        Embedding,
        Listing,
        ListingStored,
        ListingText,
        ModelVersions,
        Prediction,
        Readiness,
        Reload,
        Similar,
        SimilarFilter,
        SimilarListing,
    )

_HOMES = {
    "AsyncClient": "client",
    "Client": "client",
    "ClientError": "errors",
    "FbmrError": "errors",
    "InvalidInput": "errors",
    "NotFound": "errors",
    "ServerError": "errors",
    "ServerUnreachable": "errors",
    "TooLarge": "errors",
    "Unauthorised": "errors",
    "Unavailable": "errors",
    "RetryPolicy": "retry",
    "CatalogueListing": "types",
    "Embedding": "types",
    "Listing": "types",
    "ListingStored": "types",
    "ListingText": "types",
    "ModelVersions": "types",
    "Prediction": "types",
    "Readiness": "types",
    "Reload": "types",
    "Similar": "types",
    "SimilarFilter": "types",
    "SimilarListing": "types",
}
__all__ = [
    "AsyncClient",
    "CatalogueListing",
    "Client",
    "ClientError",
    "Embedding",
    "FbmrError",
    "InvalidInput",
    "Listing",
    "ListingStored",
    "ListingText",
    "ModelVersions",
    "NotFound",
    "Prediction",
    "Readiness",
    "Reload",
    "RetryPolicy",
    "ServerError",
    "ServerUnreachable",
    "Similar",
    "SimilarFilter",
    "SimilarListing",
    "TooLarge",
    "Unauthorised",
    "Unavailable",
]


__getattr__ = lazy_names(__name__, _HOMES)
