"""The similar-listing search, and the checks it shares with the listing routes: an index is
loaded, it holds the embedding space of the model version that answered, and a category named is
one that version predicts."""

from __future__ import annotations

import functools
import json

from anyio import to_thread

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ErrorCode, Kind
from fbmr.serving import request_context
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.live_index import Hit, LiveIndex
from fbmr.serving.index.ranked import ranked_search
from fbmr.serving.index.store import IndexStore
from fbmr.serving.service.answers import Encoder, answer
from fbmr.serving.service.errors import Invalid, Unavailable
from fbmr.serving.service.state import FacadeState
from fbmr.serving.settings import FacadeSettings

# what a query must hold to be answered in each embedding space
QUERY_INPUTS = {
    Kind.image: "a photo only",
    Kind.text: "a text only",
    Kind.combined: "a photo and a text",
}


def loaded_index(store: IndexStore, settings: FacadeSettings) -> LiveIndex:
    """The index version in use; a request keeps it even if a new one is swapped in."""
    index = store.current
    if index is None:
        raise Unavailable(
            "no similar-listing index loaded yet (fbmr index build)",
            settings.retry_after_s,
            ErrorCode.index_unavailable,
        )
    return index


def searchable(index: LiveIndex, kind: Kind) -> None:
    """Invalid unless `index` holds embeddings of `kind`, naming the queries it can answer."""
    if kind not in index.kinds:
        accepted = " or ".join(QUERY_INPUTS[k] for k in index.kinds)
        raise Invalid(
            f"this index holds no {kind.value} embeddings, so it cannot answer a query "
            f"with {QUERY_INPUTS[kind]}; send {accepted}"
        )


def same_embedding_space(
    index: LiveIndex, artifacts: ModelArtifacts, settings: FacadeSettings
) -> None:
    """Unavailable unless `index` holds embeddings of the model version that answered: vectors
    from two embedding spaces are never compared or mixed."""
    if index.model_version not in (None, artifacts.version):
        raise Unavailable(
            f"the similar-listing index {index.version} holds embeddings of model version "
            f"{index.model_version}, and version {artifacts.version} is now served: rebuild "
            "the index for it (fbmr index build)",
            settings.retry_after_s,
            ErrorCode.index_unavailable,
        )


def known_category(category: str | None, artifacts: ModelArtifacts) -> None:
    """Invalid unless `category` (when given) is one the model version predicts."""
    if category is not None and category not in artifacts.labels.classes:
        raise Invalid(
            f"category: {category!r} is not a category of model version {artifacts.version}; "
            # as JSON strings: the names themselves hold commas ("Clothes, Footwear & ...")
            f"one of: {json.dumps(list(artifacts.labels.classes))}"
        )


async def similar_listings(
    state: FacadeState,
    index: LiveIndex,
    kind: Kind,
    encode: Encoder,
    k: int,
    where: ListingFilter,
) -> tuple[ModelArtifacts, list[Hit]]:
    """The `k` listings of `index` nearest to the query `encode` builds, among those `where`
    passes, ranked with the prior on their category from the same call's answer
    (`fbmr.serving.index.ranked`), with the artifacts of the model version that embedded the
    query."""
    artifacts, result = await answer(state, kind, encode)
    same_embedding_space(index, artifacts, state.settings)
    known_category(where.category, artifacts)
    # FAISS holds the GIL only briefly but a search over a large index takes milliseconds:
    # off the event loop (in the same worker threads as the routes' other blocking work), so
    # other requests keep flowing meanwhile.
    settings = state.settings
    search = functools.partial(
        ranked_search,
        index,
        kind,
        result.embedding,
        result.probabilities,
        artifacts.labels.classes,
        k,
        where,
        settings.similar_category_weight,
        settings.similar_candidates,
    )
    hits = await to_thread.run_sync(search)
    if info := request_context.current():
        info.index_version = index.version
    return artifacts, hits
