"""The similar-listing index on Milvus: for catalogues past one machine's memory.

The same index versions, filters and live updates as the embedded FAISS engine, with the
vectors and the listings' fields in Milvus collections (one per kind of query and version,
named in the version's meta.json) instead of the facade's memory. `milvus_uri` is a Milvus
cluster's address (`http://milvus:19530`; its token, where it needs one, from the facade's
`FBMR_MILVUS_TOKEN`, never written to disk) or a milvus-lite file, the embedded Milvus that
installs from PyPI, taken relative to the index directory (tests, one machine). A milvus-lite
file opens in one process only, so a facade with `--workers 2` or more needs a Milvus server
(`fbmr serve` refuses the combination at start).

Filters become a Milvus boolean expression evaluated inside the search, so k listings that pass
come back. Collections are created with strong consistency: a listing upserted is searchable
by the next query, from any facade worker. Every worker searches the same collections, so each
logged update is written into them once, in log order, by whichever worker applies it first,
under a lock all workers share (`LiveIndex.shared`), never by every worker again.

A listing's price and location may be missing. Milvus servers before 2.5 have no nullable
fields (a null is refused, or the rows miscounted), so a collection stores them as plain fields
beside a flag each (`has_price`, `has_location`), which works on milvus-lite, the 2.3 standalone
server and a current cluster alike; a collection written with nullable fields (by fbmr before
the flags) is still read and updated in its own form. Servers before 2.4 match LIKE patterns by
prefix only: there the location filter (a substring) is applied to the nearest candidates that
pass the rest, widened until k pass or every candidate was seen (at most Milvus's top-k limit).
"""

from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pymilvus import DataType, MilvusClient, MilvusException

from fbmr.core.contract import Kind
from fbmr.serving.index.build import (
    HNSW_EF_SEARCH,
    HNSW_M,
    IVF_NPROBE,
    ivf_lists,
    normalise,
    resolve_type,
)
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import Hit, LiveIndex, is_milvus_lite
from fbmr.serving.index.milvus_expressions import expression, id_list
from fbmr.serving.index.updates import Update

# Milvus counts VARCHAR lengths in bytes: an id of up to 200 characters (the route's limit)
# takes at most 800 in UTF-8; longer names and locations are cut (at a character boundary)
ID_LENGTH = 1024
TEXT_LENGTH = 2048
LISTING_FIELDS = ["id", "name", "category", "price", "location"]
# a missing price or location: the flag False, the field a placeholder no filter reads
FLAGS = {"price": "has_price", "location": "has_location"}
INSERT_BATCH = 1000
# the most results one Milvus search returns
MAX_TOPK = 16384
# HNSW's build breadth, as faiss's default for the index the FAISS engine builds
HNSW_EF_CONSTRUCTION = 40


# How much wider an HNSW search looks under a filter (Milvus chooses no breadth by itself).
FILTERED_EF_FACTOR = 8


def connect(index_dir: Path, uri: str, token: str | None = None) -> MilvusClient:
    """A client of the Milvus at `uri`: a URL, or a milvus-lite file relative to `index_dir`."""
    if is_milvus_lite(uri):
        uri = str((index_dir / uri).resolve())
    return MilvusClient(uri=uri, token=token or "")


def _index_params(client: MilvusClient, kind: IndexType, count: int) -> Any:
    params = client.prepare_index_params()
    concrete = resolve_type(kind, count)
    if concrete is IndexType.hnsw:
        options = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
        params.add_index("vector", index_type="HNSW", metric_type="IP", params=options)
    elif concrete is IndexType.ivf:
        options = {"nlist": ivf_lists(count)}
        params.add_index("vector", index_type="IVF_FLAT", metric_type="IP", params=options)
    else:
        params.add_index("vector", index_type="FLAT", metric_type="IP")
    return params


def _cut(text: str) -> str:
    """`text` within TEXT_LENGTH bytes of UTF-8, cut at a character boundary."""
    return text.encode()[:TEXT_LENGTH].decode(errors="ignore")


def _row(
    listing: dict[str, Any], vector: NDArray[np.float32], nullable: bool = False
) -> dict[str, Any]:
    """A collection's row for `listing`; `nullable` for a collection with nullable fields."""
    price, location = listing.get("price"), listing.get("location")
    row = {
        "id": str(listing["id"]),
        "name": _cut(str(listing.get("name") or "")),
        "category": _cut(str(listing["category"])),
        "price": None if price is None else float(price),
        "location": None if location is None else _cut(location),
        # the location as filters compare it: case folded
        "location_key": _cut((location or "").casefold()),
        "vector": vector.tolist(),
    }
    if not nullable:
        row |= {"has_price": price is not None, "has_location": location is not None}
        row["price"] = row["price"] or 0.0
        row["location"] = row["location"] or ""
    return row


def _listing(entity: dict[str, Any], nullable: bool = False) -> dict[str, Any]:
    """The listing a row holds (its missing fields None again)."""
    listing = {field: entity.get(field) for field in LISTING_FIELDS}
    if not nullable:
        for field, flag in FLAGS.items():
            if not entity.get(flag):
                listing[field] = None
    return listing


def _output_fields(nullable: bool) -> list[str]:
    return LISTING_FIELDS if nullable else [*LISTING_FIELDS, *FLAGS.values()]


def write_collections(
    client: MilvusClient,
    version: str,
    vectors: dict[Kind, NDArray[np.float32]],
    listings: list[dict[str, Any]],
    kind: IndexType,
) -> dict[str, str]:
    """One collection per kind of query for a new index version, through `client` (the
    caller's to close); returns their names by kind.

    The names carry a random part, so that index directories sharing one Milvus never meet."""
    token = uuid.uuid4().hex[:8]

    def write(query_kind: Kind, array: NDArray[np.float32]) -> str:
        name = f"fbmr_{version}_{query_kind.value}_{token}"
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, max_length=ID_LENGTH, is_primary=True)
        schema.add_field("name", DataType.VARCHAR, max_length=TEXT_LENGTH)
        schema.add_field("category", DataType.VARCHAR, max_length=TEXT_LENGTH)
        schema.add_field("price", DataType.DOUBLE)
        schema.add_field("has_price", DataType.BOOL)
        schema.add_field("location", DataType.VARCHAR, max_length=TEXT_LENGTH)
        schema.add_field("has_location", DataType.BOOL)
        schema.add_field("location_key", DataType.VARCHAR, max_length=TEXT_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=array.shape[1])
        client.create_collection(
            name,
            schema=schema,
            index_params=_index_params(client, kind, len(listings)),
            consistency_level="Strong",
        )
        unit = normalise(array)
        for start in range(0, len(listings), INSERT_BATCH):
            rows = [
                _row(listing, unit[start + i])
                for i, listing in enumerate(listings[start : start + INSERT_BATCH])
            ]
            client.insert(name, rows)
        # sealed and indexed now: rows left in a growing segment are searched by brute
        # force (36x slower per query at 5k rows in milvus-lite)
        client.flush(name)
        return name

    # The kinds side by side: most of a collection's creation is waiting for Milvus to build its
    # index, load it and seal the flushed segment (seconds each on a server, whatever the size).
    with ThreadPoolExecutor(max(1, len(vectors))) as pool:
        futures = {k.value: pool.submit(write, k, a) for k, a in vectors.items()}
        return {kind_name: future.result() for kind_name, future in futures.items()}


class MilvusIndex(LiveIndex):
    """One index version whose vectors and listings live in Milvus collections, which every
    facade worker shares (each update applied once: `LiveIndex.shared`)."""

    shared = True

    def __init__(self, path: Path, token: str | None = None) -> None:
        super().__init__(path)
        self.client = connect(path.parent, self.meta["milvus_uri"], token)
        self.collections = {Kind(k): name for k, name in self.meta["collections"].items()}
        self.type = IndexType(self.meta["type"])
        fields = self.client.describe_collection(self._first())["fields"]
        # written before the flags: nullable fields, read and updated in that form
        self.nullable = FLAGS["price"] not in {field["name"] for field in fields}
        self.infix_like = self._matches_infix()
        self.catch_up()

    def _matches_infix(self) -> bool:
        """Whether this Milvus matches `like "%...%"` (2.4 and later; 2.3 only prefixes)."""
        try:
            self.client.query(self._first(), filter='location_key like "%a%"', limit=1)
        except MilvusException as err:
            if "pattern" not in str(err):
                raise
            return False
        return True

    def _shared_key(self) -> str:
        return self._first()

    def _first(self) -> str:
        """One of its collections (they all hold the same listings)."""
        return str(self.collections[self.kinds[0]])

    def __contains__(self, listing_id: str) -> bool:
        found = self.client.query(
            self._first(), filter=f"id in {id_list([listing_id])}", output_fields=["id"], limit=1
        )
        return bool(found)

    def get(self, listing_id: str) -> dict[str, Any] | None:
        found = self.client.query(
            self._first(),
            filter=f"id in {id_list([listing_id])}",
            output_fields=_output_fields(self.nullable),
            limit=1,
        )
        return _listing(found[0], self.nullable) if found else None

    def __len__(self) -> int:
        rows = self.client.query(self._first(), filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _put(self, update: Update) -> None:
        assert update.listing is not None and update.vectors is not None
        for kind, name in self.collections.items():
            vector = normalise(update.vectors[kind][None])[0]
            self.client.upsert(name, [_row(update.listing, vector, self.nullable)])

    def _delete(self, listing_id: str) -> None:
        for name in self.collections.values():
            self.client.delete(name, filter=f"id in {id_list([listing_id])}")

    def _search(
        self, kind: Kind, query: NDArray[np.float32], k: int, where: ListingFilter
    ) -> list[Hit]:
        if where.location is None or self.infix_like:
            return [hit for hit, _ in self._hits(kind, query, k, where)]
        # a server that matches prefixes only: the location checked here, on ever more of the
        # nearest candidates that pass the rest of the filter
        needle, rest = where.location.casefold(), dataclasses.replace(where, location=None)
        limit = min(MAX_TOPK, max(8 * k, 64))
        while True:
            candidates = self._hits(kind, query, limit, rest)
            passed = [hit for hit, entity in candidates if needle in entity["location_key"]]
            if len(passed) >= k or len(candidates) < limit or limit == MAX_TOPK:
                return passed[:k]
            limit = min(MAX_TOPK, 4 * limit)

    def _hits(
        self, kind: Kind, query: NDArray[np.float32], k: int, where: ListingFilter
    ) -> list[tuple[Hit, dict[str, Any]]]:
        """The `k` nearest rows that pass `where`'s expression: hits, and the rows as found."""
        condition = expression(where, self.nullable)
        found = self.client.search(
            self.collections[kind],
            data=query.tolist(),
            limit=k,
            filter=condition,
            output_fields=[*_output_fields(self.nullable), "location_key"],
            search_params={"params": self._search_params(k, filtered=bool(condition))},
        )
        return [
            (Hit(_listing(hit["entity"], self.nullable), float(hit["distance"])), hit["entity"])
            for hit in found[0]
        ]

    def _search_params(self, k: int, filtered: bool = False) -> dict[str, int]:
        """The search breadth the FAISS engine serves with (HNSW's ef at least k, as Milvus
        requires), FILTERED_EF_FACTOR times wider under a filter: the graph's neighbours of a
        query mostly fail a selective one (milvus-lite found 7 of the 10 nearest passing
        listings in one build of four, when 2% pass, at the plain breadth)."""
        if self.type is IndexType.hnsw:
            ef = max(HNSW_EF_SEARCH, k)
            return {"ef": ef * FILTERED_EF_FACTOR if filtered else ef}
        if self.type is IndexType.ivf:
            return {"nprobe": IVF_NPROBE}
        return {}

    def close(self) -> None:
        self.client.close()
