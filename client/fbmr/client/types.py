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

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The `k` most probable categories with their probabilities."""
        return list(zip(self.classes[:k], self.probabilities[:k], strict=True))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(
            pred=str(data["pred"]),
            classes=[str(c) for c in data["classes"]],
            probabilities=[float(p) for p in data["probabilities"]],
        )


@dataclass(frozen=True)
class Embedding:
    """A listing's embedding and its kind: image (photo only), text (text only) or combined."""

    kind: Kind
    vector: NDArray[Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Embedding:
        return cls(Kind(data["kind"]), np.asarray(data["embedding"], dtype=np.float32))


@dataclass(frozen=True)
class SimilarListing:
    id: str
    name: str
    category: str
    price: float | None
    location: str | None
    score: float  # cosine similarity to the query, 1 at most

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimilarListing:
        price = data.get("price")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            category=str(data["category"]),
            price=None if price is None else float(price),
            location=data.get("location"),
            score=float(data["score"]),
        )


@dataclass(frozen=True)
class Similar:
    """The catalogue listings nearest to a query, nearest first, from index `index_version`."""

    kind: Kind
    index_version: str
    listings: list[SimilarListing]

    @property
    def ids(self) -> list[str]:
        return [listing.id for listing in self.listings]

    @property
    def scores(self) -> list[float]:
        return [listing.score for listing in self.listings]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Similar:
        return cls(
            kind=Kind(data["kind"]),
            index_version=str(data["index_version"]),
            listings=[SimilarListing.from_json(item) for item in data["listings"]],
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
