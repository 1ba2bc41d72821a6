"""Typed results of the facade's endpoints, built from its JSON answers.

Plain frozen dataclasses (the client carries no pydantic): a `Prediction` ranks every category,
an `Embedding` says which space it lives in, `Similar` holds the nearest catalogue listings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind


@dataclass(frozen=True)
class ListingText:
    """A listing's text as its fields: the title as the marketplace wrote it (its `| in Town |
    Gumtree` suffix may stay) and the description. The facade reads them as training read the
    catalogue; a plain `str` is sent as one free text instead."""

    name: str = ""
    description: str = ""

    def fields(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description}


# What the client's `text` parameters take.
Text = str | ListingText


@dataclass(frozen=True)
class Prediction:
    """Every category, most probable first, with its probability; `pred` is the first."""

    pred: str
    classes: list[str]
    probabilities: list[float]
    model_version: int | None = None  # the exported model version that answered
    # with a text: the share of its words the model saw in training; near 0 the answer is a guess
    known_words: float | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The `k` most probable categories with their probabilities."""
        return list(zip(self.classes[:k], self.probabilities[:k], strict=True))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(
            pred=str(data["pred"]),
            classes=[str(c) for c in data["classes"]],
            probabilities=[float(p) for p in data["probabilities"]],
            model_version=_version(data),
            known_words=None if data.get("known_words") is None else float(data["known_words"]),
        )


def _version(data: dict[str, Any]) -> int | None:
    """The answer's `model_version` (None from a facade older than versions)."""
    version = data.get("model_version")
    return None if version is None else int(version)


@dataclass(frozen=True)
class Embedding:
    """A listing's embedding and its kind: image (photo only), text (text only) or combined."""

    kind: Kind
    vector: NDArray[Any]
    model_version: int | None = None  # the exported model version whose space it is in

    @property
    def embedding(self) -> NDArray[Any]:
        """The vector, under the name the API's answer gives it."""
        return self.vector

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Embedding:
        vector = np.asarray(data["embedding"], dtype=np.float32)
        return cls(Kind(data["kind"]), vector, _version(data))


@dataclass(frozen=True)
class SimilarListing:
    id: str
    name: str
    category: str
    price: float | None
    location: str | None
    score: float  # cosine similarity to the query, 1 at most
    # what the listings are ordered by: the score plus the prior on the listing's category
    # (the score itself from a facade that ranks by similarity alone)
    rank_score: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimilarListing:
        score = float(data["score"])
        rank_score = float(data.get("rank_score", score))
        return cls(**_listing_fields(data), score=score, rank_score=rank_score)


def _listing_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A listing's stored fields (id, name, category, price, location) from an answer."""
    price = data.get("price")
    return {
        "id": str(data["id"]),
        "name": str(data["name"]),
        "category": str(data["category"]),
        "price": None if price is None else float(price),
        "location": data.get("location"),
    }


@dataclass(frozen=True)
class Similar:
    """The catalogue listings most similar to a query, from index `index_version`, in the order
    of their rank scores (the similarity plus the prior on each listing's category)."""

    kind: Kind
    index_version: str
    listings: list[SimilarListing]
    model_version: int | None = None  # the exported model version that embedded the query

    @property
    def ids(self) -> list[str]:
        return [listing.id for listing in self.listings]

    @property
    def scores(self) -> list[float]:
        return [listing.score for listing in self.listings]

    @property
    def rank_scores(self) -> list[float]:
        return [listing.rank_score for listing in self.listings]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Similar:
        return cls(
            kind=Kind(data["kind"]),
            index_version=str(data["index_version"]),
            listings=[SimilarListing.from_json(item) for item in data["listings"]],
            model_version=_version(data),
        )


@dataclass(frozen=True)
class SimilarFilter:
    """Which catalogue listings a `similar` query may return; every condition given must hold.
    The facade applies it inside the search, so k listings come back when k pass."""

    category: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    location: str | None = None  # a substring of the listing's location, case ignored
    exclude_ids: tuple[str, ...] = ()  # e.g. the listing the query is about

    def fields(self) -> dict[str, str | list[str]]:
        given = {
            "category": self.category,
            "price_min": self.price_min,
            "price_max": self.price_max,
            "location": self.location,
        }
        fields: dict[str, str | list[str]] = {
            name: str(value) for name, value in given.items() if value is not None
        }
        if self.exclude_ids:
            fields["exclude_id"] = list(self.exclude_ids)
        return fields


@dataclass(frozen=True)
class Listing:
    """A catalogue listing to put in the live similar-listing index (`Client.put_listing`)."""

    id: str
    name: str  # as the marketplace wrote it
    description: str = ""
    # a path, bytes or a PIL image, or a list of them (`fbmr.client.photos.Photos`): the index
    # embeds the listing from all its photos
    photo: Any = None
    category: str | None = None  # by default the one the model predicts
    price: float | None = None
    location: str | None = None

    def fields(self) -> dict[str, str | list[str]]:
        given = {
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": self.price,
            "location": self.location,
        }
        return {name: str(value) for name, value in given.items() if value is not None}


@dataclass(frozen=True)
class CatalogueListing:
    """A listing as the live similar-listing index holds it (`Client.get_listing`)."""

    id: str
    name: str
    category: str
    price: float | None
    location: str | None
    index_version: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CatalogueListing:
        return cls(**_listing_fields(data), index_version=str(data["index_version"]))


@dataclass(frozen=True)
class ListingStored:
    """A listing put: searchable from now on, embedded by `model_version`."""

    id: str
    category: str
    replaced: bool  # a listing of this id was in the index
    index_version: str
    model_version: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ListingStored:
        return cls(
            id=str(data["id"]),
            category=str(data["category"]),
            replaced=bool(data["replaced"]),
            index_version=str(data["index_version"]),
            model_version=int(data["model_version"]),
        )


@dataclass(frozen=True)
class Readiness:
    """What `/readyz` reports; `ready` is True when everything is (the facade answers 200)."""

    ready: bool
    triton: bool
    models: bool
    index: bool
    index_version: str | None
    model_version: int | None = None
    rollout: str | None = None  # in words: the version served, a pin, refused versions

    @classmethod
    def from_json(cls, data: dict[str, Any], ready: bool) -> Readiness:
        return cls(
            ready=ready,
            triton=bool(data.get("triton")),
            models=bool(data.get("models")),
            index=bool(data.get("index")),
            index_version=data.get("index_version"),
            model_version=data.get("model_version"),
            rollout=data.get("rollout"),
        )


@dataclass(frozen=True)
class ModelVersions:
    """What `/v1/admin/model-version` reports: the version in use, the pin (None: the newest
    export is followed), and the versions the rollout refused, with their causes."""

    in_use: int | None
    pinned: int | None
    refused: dict[int, str]
    rollout: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelVersions:
        return cls(
            in_use=data.get("model_version"),
            pinned=data.get("pinned"),
            refused={int(k): str(v) for k, v in (data.get("refused") or {}).items()},
            rollout=str(data.get("rollout", "")),
        )


@dataclass(frozen=True)
class Reload:
    """What `/v1/admin/reload-index` did: whether a new version was loaded, and which is current."""

    reloaded: bool
    version: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reload:
        return cls(reloaded=bool(data["reloaded"]), version=data.get("version"))
