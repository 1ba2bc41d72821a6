"""`fbmr index build`: embed a catalogue through the running Triton and save a FAISS index.

The catalogue is a prepared dataset (`fbmr data prepare`; a seed layout is prepared by that one
command first). Each listing is embedded with its photos (pooled) and its text, through the same
preprocessing and ensembles the facade uses for queries.

The embedding itself is the client library's direct scorer (`fbmr.client.batch.TritonScorer`,
what `fbmr score --triton-url` runs): whole batches per call, pinned to the exported version the
index records, Triton's transient errors retried with back-off for up to two minutes, so a
Triton restart delays a catalogue-wide build instead of ending it. It needs fbmr-client
(`fbmr-serving[client]`), which the facade itself does not.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import NDArray
from tqdm import tqdm

from fbmr.client.batch import TritonScorer
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import Kind
from fbmr.core.datasets import PREPARED_IMAGES, PREPARED_PRODUCTS
from fbmr.core.listing import listing_text, photo_cell
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.retention import KEEP_VERSIONS, tidy_up
from fbmr.serving.index.store import save_version, writer_lock
from fbmr.serving.index.updates import changes, fold

log = logging.getLogger(__name__)


def read_catalogue(prepared: Path, splits: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Listings of a prepared dataset, each with its photos (a path, or the list of its several
    in the dataset's order), which the index embeds pooled, as the facade pools a request's."""
    if not (prepared / PREPARED_PRODUCTS).is_file():
        raise FileNotFoundError(
            f"{prepared} is not a prepared dataset (no {PREPARED_PRODUCTS}); "
            "run `fbmr data prepare SRC --out DIR` on a seed layout first"
        )
    products = pq.read_table(prepared / PREPARED_PRODUCTS).to_pylist()
    photos: dict[str, list[str]] = {}
    for image in pq.read_table(prepared / PREPARED_IMAGES).to_pylist():
        photos.setdefault(image["product_id"], []).append(str(prepared / image["file"]))
    return [
        {**p, "photo": photo_cell(photos[p["product_id"]])}
        for p in products
        if p["product_id"] in photos and (splits is None or p["split"] in splits)
    ]


def embed_catalogue(
    listings: list[dict[str, Any]],
    triton_url: str,
    artifacts: ModelArtifacts,
    kinds: tuple[Kind, ...] = tuple(Kind),
    batch_rows: int = 32,
    concurrency: int = 4,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[Kind, NDArray[np.float32]]]:
    """Embeddings of every listing, in `batch_rows` batches with `concurrency` under way at once
    (one decodes photos while another waits for Triton). Listings whose photo cannot be read are
    skipped and logged; `fbmr.client.errors.Unavailable` once Triton stays away."""
    rows = pd.DataFrame(
        {
            "photo": [item["photo"] for item in listings],
            "text": [
                listing_text(item["product_name"], item["product_description"]) for item in listings
            ],
        }
    )
    batches = [rows.iloc[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    scorer = TritonScorer(triton_url, artifacts)
    bar = tqdm(total=len(rows), desc="embed catalogue", unit="listing", disable=not progress)
    errors: list[str | None] = []
    parts: dict[Kind, list[NDArray[np.float32]]] = {kind: [] for kind in kinds}
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            for batch_errors, vectors in pool.map(lambda b: scorer.embeddings(b, kinds), batches):
                errors += batch_errors
                for kind, array in vectors.items():
                    parts[kind].append(array)
                bar.update(len(batch_errors))
    finally:
        bar.close()
        scorer.close()
    kept = []
    for item, error in zip(listings, errors, strict=True):
        if error is None:
            kept.append(item)
        else:
            log.warning("skipped %s: %s", item["product_id"], error)
    vectors = {kind: np.concatenate(parts[kind]) for kind in kinds} if kept else {}
    return kept, vectors


# How many times a build folds in the updates that arrived while it embedded; the few after the
# last round are replayed by the facade (with a warning, and skipped, when the model changed).
LATE_ROUNDS = 3


def build_catalogue_index(
    prepared: Path,
    index_dir: Path,
    triton_url: str,
    repository: Path,
    index_type: IndexType = IndexType.auto,
    splits: tuple[str, ...] | None = None,
    kinds: tuple[Kind, ...] = tuple(Kind),
    progress: bool = True,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
    keep: int = KEEP_VERSIONS,
) -> Path:
    """Embed the catalogue and save it as the index's next version (in FAISS files, or in the
    Milvus at `milvus_uri`), then remove all but the newest `keep` versions; returns its
    folder. One build or compaction at a time (`writer_lock`)."""
    with writer_lock(index_dir):
        return _build(
            prepared, index_dir, triton_url, repository, index_type, splits, kinds, progress,
            milvus_uri, milvus_token, keep,
        )  # fmt: skip


def _build(
    prepared: Path,
    index_dir: Path,
    triton_url: str,
    repository: Path,
    index_type: IndexType,
    splits: tuple[str, ...] | None,
    kinds: tuple[Kind, ...],
    progress: bool,
    milvus_uri: str | None,
    milvus_token: str | None,
    keep: int,
) -> Path:
    # listings put or deleted while the previous versions served are folded in, embedded again
    # by this version's models; the new version replays only what comes after
    catalogue, folded = fold(read_catalogue(prepared, splits), index_dir)
    artifacts = ModelArtifacts.load(repository)
    listings, vectors = embed_catalogue(catalogue, triton_url, artifacts, kinds, progress=progress)
    for _ in range(LATE_ROUNDS):
        # the updates acknowledged while the catalogue was embedding (by the previous model,
        # whose vectors this version cannot use): folded in and embedded now, until none are new
        late, end = changes(index_dir, folded)
        if not late:
            break
        kept = [i for i, item in enumerate(listings) if item["product_id"] not in late]
        vectors = {k: array[kept] for k, array in vectors.items()}
        listings = [listings[i] for i in kept]
        if puts := [row for row in late.values() if row is not None]:
            added, more = embed_catalogue(puts, triton_url, artifacts, kinds, progress=False)
            if added:  # (a put whose photo cannot be read is skipped, and logged)
                listings += added
                vectors = {k: np.concatenate([vectors[k], more[k]]) for k in kinds}
        folded = end
    public = [
        {
            "id": item["product_id"],
            "name": item["product_name"],
            "category": item["label"],
            "price": None if item["price"] is None or np.isnan(item["price"]) else item["price"],
            "location": item["location"],
        }
        for item in listings
    ]
    meta = {
        "catalogue": str(prepared.resolve()),
        "splits": list(splits) if splits else "all",
        "model_version": artifacts.version,
        "skipped": len(catalogue) - len(listings),
        **folded.meta(),
    }
    path = save_version(index_dir, vectors, public, meta, index_type, milvus_uri, milvus_token)
    tidy_up(index_dir, keep, milvus_uri, milvus_token)
    return path
