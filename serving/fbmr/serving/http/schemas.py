"""Request and response bodies of the facade (its OpenAPI schema)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ErrorCode, Kind


class TextQuery(BaseModel):
    """A listing's text: its fields, or one free text. Either way the facade reads it as training
    read the listing (`fbmr.core.listing.model_text`): the marketplace's `| in Town | Gumtree`
    title suffix removed, white space folded."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored

    text: str | None = Field(
        None, description="The listing's name and/or description as one free text."
    )
    name: str | None = Field(None, description="The listing's title, as the marketplace wrote it.")
    description: str | None = Field(None, description="The listing's description.")

    @property
    def given(self) -> bool:
        return any(part is not None for part in (self.text, self.name, self.description))


class Prediction(BaseModel):
    """Compatible with the seed API: `pred` and `classes`, plus the probabilities."""

    pred: str = Field(..., description="The most probable category.")
    classes: list[str] = Field(..., description="Every category, most probable first.")
    probabilities: list[float] = Field(..., description="Their probabilities, in that order.")
    model_version: int = Field(..., description="The exported model version that answered.")
    known_words: float | None = Field(
        None,
        description="With a text: the share of its words the model saw in training (0 to 1). "
        "Near 0 (emoji only, another alphabet) the text told the model nothing and the answer "
        "is a guess, whatever its probabilities.",
    )

    @classmethod
    def ranked(
        cls, probabilities: NDArray[np.float32], artifacts: ModelArtifacts, text: str | None = None
    ) -> Prediction:
        """The answer of the model version of `artifacts`, whose outputs were `probabilities`,
        for a query with `text` (None: a photo alone)."""
        ranked = artifacts.labels.rank(probabilities)
        return cls(
            pred=ranked[0][0],
            classes=[c for c, _ in ranked],
            probabilities=[p for _, p in ranked],
            model_version=artifacts.version,
            known_words=None if text is None else artifacts.tokenizer.known_share(text),
        )


class EmbedResponse(BaseModel):
    kind: Kind = Field(..., description="image (photo only), text (text only) or combined.")
    embedding: list[float]
    model_version: int = Field(..., description="The exported model version that answered.")


class ListingFields(BaseModel):
    """A listing's fields as the similar-listing index stores them."""

    id: str
    name: str
    category: str
    price: float | None = None
    location: str | None = None


class SimilarListing(ListingFields):
    score: float = Field(..., description="Cosine similarity to the query, 1 at most.")
    rank_score: float = Field(
        ...,
        description="What the listings are ordered by, highest first: the score plus the prior "
        "on the listing's category, the weighted log of the probability the query's answer "
        "gives it (FBMR_SIMILAR_CATEGORY_WEIGHT), so a listing of a more probable category may "
        "come before a closer one. The score itself when the query names a category or the "
        "weight is 0.",
    )


class SimilarResponse(BaseModel):
    kind: Kind
    index_version: str
    model_version: int = Field(..., description="The exported model version that answered.")
    listings: list[SimilarListing]


class ListingStored(BaseModel):
    id: str
    category: str = Field(..., description="The category given, or else the one predicted.")
    replaced: bool = Field(..., description="Whether a listing of this id was in the index.")
    index_version: str
    model_version: int = Field(..., description="The exported model version that embedded it.")


class CatalogueListing(ListingFields):
    """A listing as the similar-listing index holds it (what `/v1/similar` returns of it)."""

    index_version: str


class ListingDeleted(BaseModel):
    id: str
    index_version: str


class ReloadResponse(BaseModel):
    reloaded: bool
    version: str | None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    triton: bool = Field(..., description="Triton serves every ensemble of the version in use.")
    models: bool = Field(..., description="The exported version's tokeniser and labels loaded.")
    index: bool = Field(..., description="A similar-listing index loaded.")
    index_version: str | None = None
    model_version: int | None = Field(None, description="The exported model version in use.")
    rollout: str | None = Field(
        None,
        description="In words: the version served, a pin, and each refused version with its "
        "cause, e.g. 'serving version 1; version 2 refused: image_encoder: ...'.",
    )
    refused: dict[int, str] = Field(
        default_factory=dict, description="Versions the rollout refused, with their cause."
    )
    pinned: int | None = Field(None, description="The version the service is pinned to.")
    triton_process: str | None = Field(
        None, description="The local Triton's supervisor, when the facade started one."
    )


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: StrictInt | None = Field(
        ..., ge=1, description="The exported version to serve; null: the newest again."
    )


class RolloutResponse(BaseModel):
    model_version: int | None = Field(..., description="The exported model version in use.")
    pinned: int | None
    refused: dict[int, str]
    rollout: str = Field(..., description="The same in words.")


class ErrorResponse(BaseModel):
    error: str = Field(..., description="What was wrong, in words (for people; may be reworded).")
    code: ErrorCode = Field(..., description="What was wrong, as a stable code for programs.")
