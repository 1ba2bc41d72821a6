"""The similar-listing search ranked with the prior on each listing's category: on either engine
it answers what the ranking means, written out as an exact search over every listing."""

from __future__ import annotations

import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.core.ranking import category_prior
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.ranked import ranked_search
from fbmr.serving.index.store import open_version, save_version

CLASSES = ("chairs", "lamps", "bikes", "books")
# the query's answer: lamps first, then chairs, bikes, books
ANSWER = np.array([0.3, 0.45, 0.2, 0.05])


@pytest.fixture
def catalogue(tmp_path, milvus_uri):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    listings = [
        {"id": f"L{i}", "name": f"item {i}", "category": CLASSES[i % 4], "price": float(i)}
        for i in range(len(vectors))
    ]
    path = save_version(tmp_path, {Kind.image: vectors}, listings, {}, IndexType.exact, milvus_uri)
    return vectors, listings, open_version(path)


def _expected(vectors, listings, query, weight, k, where=ListingFilter(), candidates=5):
    """The ranking's meaning written out: the `candidates` x k nearest listings that pass, by
    exact search, re-ranked by cosine plus the prior on their category."""
    cosine = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (
        query / np.linalg.norm(query)
    )
    passing = [i for i, item in enumerate(listings) if item["id"] not in where.exclude_ids]
    nearest = sorted(passing, key=lambda i: -cosine[i])[: candidates * k]
    prior = category_prior(ANSWER, weight)
    rows = [
        (cosine[i] + prior[CLASSES.index(listings[i]["category"])], listings[i]["id"], cosine[i])
        for i in nearest
    ]
    return sorted(rows, reverse=True)[:k]


def test_the_search_ranks_by_similarity_plus_the_prior_on_each_category(catalogue):
    vectors, listings, index = catalogue
    query = vectors[0] + 0.3 * vectors[1]  # near a chair (L0) and a lamp (L1)
    hits = ranked_search(index, Kind.image, query, ANSWER, CLASSES, 10, ListingFilter(), 0.2, 5)
    expected = _expected(vectors, listings, query, 0.2, 10)
    assert [hit.listing["id"] for hit in hits] == [row[1] for row in expected]
    # each keeps its cosine similarity as its score; the order is the rank score's
    np.testing.assert_allclose([hit.score for hit in hits], [row[2] for row in expected], atol=1e-5)
    np.testing.assert_allclose([hit.ranked_by for hit in hits], [r[0] for r in expected], atol=1e-5)
    # the prior changed the order: plain nearest neighbours are not these
    plain = index.search(Kind.image, query, 10)
    assert [hit.listing["id"] for hit in plain] != [hit.listing["id"] for hit in hits]


def test_the_filters_other_conditions_hold_in_every_category_searched(catalogue):
    vectors, listings, index = catalogue
    query = vectors[5]
    first = _expected(vectors, listings, query, 0.05, 5)
    where = ListingFilter(exclude_ids=frozenset(row[1] for row in first))
    hits = ranked_search(index, Kind.image, query, ANSWER, CLASSES, 5, where, 0.05, 5)
    expected = _expected(vectors, listings, query, 0.05, 5, where)
    assert [hit.listing["id"] for hit in hits] == [row[1] for row in expected]


def test_a_named_category_or_weight_0_is_the_plain_search(catalogue):
    vectors, _, index = catalogue
    query = vectors[9]
    for where, weight in ((ListingFilter(category="books"), 0.05), (ListingFilter(), 0.0)):
        hits = ranked_search(index, Kind.image, query, ANSWER, CLASSES, 5, where, weight, 5)
        assert hits == index.search(Kind.image, query, 5, where)
        assert all(hit.ranked_by == hit.score for hit in hits)


def test_only_the_nearest_candidates_are_re_ranked(catalogue):
    vectors, listings, index = catalogue
    query = vectors[3]  # L3, a book: the category the answer puts last
    plain = {hit.listing["id"] for hit in index.search(Kind.image, query, 5)}
    found = {}
    for candidates in (1, 2, 40):
        hits = ranked_search(index, Kind.image, query, ANSWER, CLASSES, 5, ListingFilter(), 0.2,
                             candidates)  # fmt: skip
        expected = _expected(vectors, listings, query, 0.2, 5, candidates=candidates)
        assert [hit.listing["id"] for hit in hits] == [row[1] for row in expected]
        found[candidates] = {hit.listing["id"] for hit in hits}
    # 1 x k candidates: the plain 5 in another order; more: listings from further out come in
    assert found[1] == plain and found[40] != plain


def test_a_listing_of_a_category_the_model_does_not_know_ranks_as_if_ruled_out(catalogue):
    # a catalogue listing put with a category the serving model has no class for (an older
    # model's, say): no error, and the lowest prior of any class
    vectors, _, index = catalogue
    known, answer = CLASSES[:3], ANSWER[:3] / ANSWER[:3].sum()  # no class for "books"
    query = vectors[3] + 0.2 * vectors[1]  # L3 is a book
    hits = ranked_search(index, Kind.image, query, answer, known, 10, ListingFilter(), 0.05, 5)
    prior = category_prior(answer, 0.05)
    for hit in hits:
        category = hit.listing["category"]
        expected = prior[known.index(category)] if category in known else prior.min()
        assert hit.ranked_by == pytest.approx(hit.score + expected)
    assert "books" in {hit.listing["category"] for hit in hits}
