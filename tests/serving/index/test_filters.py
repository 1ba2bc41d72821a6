"""Filters on the similar-listing search: applied inside the search on every index type of both
engines (FAISS, Milvus), so k listings that pass come back; and through the facade's
`/v1/similar` form fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.serving.index.filters import EXACT_BELOW, ListingColumns, ListingFilter, exact_limit
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.store import open_version, save_version
from tests.helpers import assert_error

CATEGORIES = ("chairs", "lamps", "bikes", "books")


def _catalogue(n: int = 1200, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    listings = [
        {
            "id": f"L{i}",
            "name": f"item {i}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "price": None if i % 10 == 0 else float(i % 100),
            "location": ("Leeds, West Yorkshire", "Bath, Somerset")[i % 2],
        }
        for i in range(n)
    ]
    return vectors, listings


def _passes(listing: dict, where: ListingFilter) -> bool:
    """The filter's meaning, written out for one listing (what the vectorised form must match)."""
    price = listing["price"]
    return (
        (where.category is None or listing["category"] == where.category)
        and (where.price_min is None or (price is not None and price >= where.price_min))
        and (where.price_max is None or (price is not None and price <= where.price_max))
        and (where.location is None or where.location.lower() in listing["location"].lower())
        and listing["id"] not in where.exclude_ids
    )


FILTERS = [
    ListingFilter(category="lamps"),
    ListingFilter(price_min=20, price_max=30),
    ListingFilter(location="LEEDS"),
    ListingFilter(category="bikes", location="leeds", price_max=50),  # about 1 in 9 pass
    ListingFilter(exclude_ids=frozenset({"L0", "L1", "L2"})),
    ListingFilter(category="chairs", price_min=40, price_max=48),  # 24 of 1,200 pass
]


@pytest.mark.parametrize("where", FILTERS)
def test_columns_select_exactly_the_listings_that_pass(where):
    _, listings = _catalogue()
    expected = [i for i, item in enumerate(listings) if _passes(item, where)]
    assert np.flatnonzero(ListingColumns(listings).mask(where)).tolist() == expected


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory):
    """The catalogue built once per engine and index type for the module (on a Milvus server a
    build takes seconds); the filter cases only search it."""
    built = {}

    def catalogue(kind: IndexType, milvus_uri: str | None):
        if (kind, milvus_uri) not in built:
            vectors, listings = _catalogue()
            folder = tmp_path_factory.mktemp("filters")
            path = save_version(folder, {Kind.text: vectors}, listings, {}, kind, milvus_uri)
            built[kind, milvus_uri] = open_version(path)
        return built[kind, milvus_uri]

    return catalogue


@pytest.mark.parametrize("kind", [IndexType.exact, IndexType.hnsw, IndexType.ivf])
@pytest.mark.parametrize("where", FILTERS)
def test_filtered_search_returns_k_listings_that_pass_nearest_first(
    catalogues, kind, where, milvus_uri
):
    vectors, listings = _catalogue()
    index = catalogues(kind, milvus_uri)
    query = vectors[0] + 0.1
    hits = index.search(Kind.text, query, 10, where)
    assert len(hits) == 10
    assert all(_passes(hit.listing, where) for hit in hits)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    # against exact search over the listings that pass: the same nearest ones (HNSW and IVF
    # are approximate: most of them)
    allowed = [i for i, item in enumerate(listings) if _passes(item, where)]
    unit = vectors[allowed] / np.linalg.norm(vectors[allowed], axis=1, keepdims=True)
    exact = {listings[allowed[i]]["id"] for i in np.argsort(-(unit @ query))[:10]}
    found = {hit.listing["id"] for hit in hits}
    assert len(found & exact) >= (10 if kind is IndexType.exact else 8)


def test_a_filter_nothing_passes_returns_nothing_and_no_filter_searches_all(tmp_path, milvus_uri):
    vectors, listings = _catalogue(200)
    path = save_version(tmp_path, {Kind.text: vectors}, listings, {}, milvus_uri=milvus_uri)
    index = open_version(path)
    assert index.search(Kind.text, vectors[3], 5, ListingFilter(category="boats")) == []
    unfiltered = index.search(Kind.text, vectors[3], 5, ListingFilter())
    assert unfiltered[0].listing["id"] == "L3"
    assert unfiltered == index.search(Kind.text, vectors[3], 5)


def test_the_facade_filters_similar_listings(facade, demo_index, listings):
    catalogue = json.loads((demo_index / "v0001" / "listings.json").read_text())
    photo, text = listings[0]
    query = {"files": {"photo": ("p.jpg", photo)}}
    first = facade.post("/v1/similar", data={"text": text, "k": "3"}, **query).json()["listings"]
    category = catalogue[-1]["category"]  # not necessarily the query's own
    prices = sorted(item["price"] for item in catalogue if item["price"] is not None)
    low, high = prices[len(prices) // 4], prices[3 * len(prices) // 4]
    form = {
        "text": text,
        "k": "4",
        "category": category,
        "price_min": str(low),
        "price_max": str(high),
        "exclude_id": [item["id"] for item in first],
    }
    response = facade.post("/v1/similar", data=form, **query)
    assert response.status_code == 200, response.text
    hits = response.json()["listings"]
    passing = [
        item
        for item in catalogue
        if item["category"] == category
        and item["price"] is not None
        and low <= item["price"] <= high
        and item["id"] not in form["exclude_id"]
    ]
    assert len(hits) == min(4, len(passing)) > 0
    for hit in hits:
        assert hit["category"] == category and low <= hit["price"] <= high
        assert hit["id"] not in form["exclude_id"]
    town = catalogue[0]["location"].split(",")[0].upper()
    located = facade.post("/v1/similar", data={"text": text, "k": "5", "location": town}).json()
    assert located["listings"] and all(
        town.lower() in hit["location"].lower() for hit in located["listings"]
    )


def test_the_facade_refuses_filters_that_cannot_hold(facade, listings):
    text = listings[0][1]
    refused = facade.post("/v1/similar", data={"text": text, "category": "Spaceships"})
    assert_error(refused, 422, "category")
    # the categories as JSON strings: their names hold commas
    named = json.loads(refused.json()["error"].split("one of: ", 1)[1])
    assert "Clothes, Footwear & Accessories" in named or all(isinstance(n, str) for n in named)
    assert_error(
        facade.post("/v1/similar", data={"text": text, "price_min": "50", "price_max": "10"}),
        422,
        "price_min",
    )
    assert_error(
        facade.post("/v1/similar", data={"text": text, "price_min": "cheap"}), 422, "price_min"
    )
    assert_error(
        facade.post("/v1/similar", data={"text": text, "price_max": "inf"}), 422, "price_max"
    )


def test_filters_are_scored_exactly_below_a_limit_that_grows_with_the_catalogue():
    """Where scoring the passing listings beat the widened walk (docs/results.md): 15,000 of
    300,000 and 10,000 of 1M are scored; 30,000 of 300,000 and 100,000 of 1M are walked; a small
    catalogue keeps the floor."""
    assert exact_limit(10_000) == EXACT_BELOW
    assert 15_000 < exact_limit(300_000) < 30_000
    assert 10_000 < exact_limit(1_000_000) < 100_000
    assert exact_limit(4_000_000) > exact_limit(1_000_000)
