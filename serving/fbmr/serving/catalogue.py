"""`fbmr index build`: embed a catalogue through the running Triton and save a FAISS index.

The catalogue is a prepared dataset (`fbmr data prepare`; a seed layout is prepared by that one
command first). Each listing is embedded with its first photo and its text, through the same
preprocessing and ensembles the facade uses for queries.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray
from tqdm import tqdm

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ENSEMBLES, IMAGE, TOKEN_IDS, Kind
from fbmr.core.image import ImageDecodeError
from fbmr.core.listing import listing_text
from fbmr.serving.index import save_version
from fbmr.serving.index_types import IndexType
from fbmr.serving.inference import TritonModels

log = logging.getLogger(__name__)


def read_catalogue(prepared: Path, splits: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Listings of a prepared dataset, each with the path of its first photo."""
    if not (prepared / "products.parquet").is_file():
        raise FileNotFoundError(
            f"{prepared} is not a prepared dataset (no products.parquet); "
            "run `fbmr data prepare SRC --out DIR` on a seed layout first"
        )
    products = pq.read_table(prepared / "products.parquet").to_pylist()
    first_photo: dict[str, str] = {}
    for image in pq.read_table(prepared / "images.parquet").to_pylist():
        first_photo.setdefault(image["product_id"], image["file"])
    return [
        {**p, "photo": str(prepared / first_photo[p["product_id"]])}
        for p in products
        if p["product_id"] in first_photo and (splits is None or p["split"] in splits)
    ]


async def _embed(
    models: TritonModels,
    artifacts: ModelArtifacts,
    listing: dict[str, Any],
    kinds: tuple[Kind, ...],
    limit: asyncio.Semaphore,
) -> dict[Kind, NDArray[np.float32]] | None:
    async with limit:
        try:
            photo = Path(listing["photo"]).read_bytes()
            image = await asyncio.to_thread(artifacts.image_input, photo)
        except (OSError, ImageDecodeError) as err:
            log.warning("skipped %s: %s", listing["product_id"], err)
            return None
        text = listing_text(listing["product_name"], listing["product_description"])
        inputs: dict[str, NDArray[Any]] = {
            IMAGE: image[None],
            TOKEN_IDS: artifacts.text_input(text)[None],
        }
        results = await asyncio.gather(
            *(
                models.infer(
                    kind,
                    {name: inputs[name] for name in ENSEMBLES[kind].inputs},
                    artifacts.version,  # the version the index records
                )
                for kind in kinds
            )
        )
        return {kind: result.embedding for kind, result in zip(kinds, results, strict=True)}


async def embed_catalogue(
    listings: list[dict[str, Any]],
    triton_url: str,
    artifacts: ModelArtifacts,
    kinds: tuple[Kind, ...] = tuple(Kind),
    concurrency: int = 8,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[Kind, NDArray[np.float32]]]:
    """Embeddings of every listing (those whose photo cannot be read are skipped and logged).
    Requests go concurrently so Triton's dynamic batching can group them."""
    models = TritonModels(triton_url, timeout_s=60.0)
    limit = asyncio.Semaphore(concurrency)
    try:
        tasks = [
            asyncio.ensure_future(_embed(models, artifacts, item, kinds, limit))
            for item in listings
        ]
        bar = tqdm(total=len(tasks), desc="embed catalogue", unit="listing", disable=not progress)
        for task in asyncio.as_completed(tasks):
            await task
            bar.update()
        bar.close()
        results = [task.result() for task in tasks]
    finally:
        await models.close()
    kept = [(item, r) for item, r in zip(listings, results, strict=True) if r is not None]
    vectors = {kind: np.stack([r[kind] for _, r in kept]) for kind in kinds} if kept else {}
    return [item for item, _ in kept], vectors


def build_index(
    prepared: Path,
    index_dir: Path,
    triton_url: str,
    repository: Path,
    index_type: IndexType = IndexType.auto,
    splits: tuple[str, ...] | None = None,
    kinds: tuple[Kind, ...] = tuple(Kind),
    progress: bool = True,
) -> Path:
    """Embed the catalogue and save it as the index's next version; returns its folder."""
    catalogue = read_catalogue(prepared, splits)
    artifacts = ModelArtifacts.load(repository)
    listings, vectors = asyncio.run(
        embed_catalogue(catalogue, triton_url, artifacts, kinds, progress=progress)
    )
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
    }
    return save_version(index_dir, vectors, public, meta, index_type)
