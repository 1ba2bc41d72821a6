"""Live catalogue updates: what a stream of puts and deletes costs the similar-listing search.

    uv run python bench/live_updates.py recall                  # the index alone, no servers
    uv run python bench/live_updates.py engines --listings 1000000  # FAISS beside Milvus
    uv run python bench/live_updates.py facade --url http://127.0.0.1:8080 --data PREPARED

`recall`: a catalogue of --listings synthetic clustered vectors (bench/faiss_scale.py's
ClusteredVectors) is built as an index version, then --adds listings are put and --deletes
deleted through the update log, as the facade does. Recall@10 (against exact search over the
final catalogue) of that live index is set beside the recall of an index of the same type
rebuilt from scratch over the same final catalogue; also the time to apply an update.

`facade`: against a running facade, --users threads send `/v1/similar` queries while one
stream puts --updates listings of the prepared dataset's test split (new ids) and deletes
some. For each put: the latency of the PUT, and the time from its acknowledgement until a query
on a fresh connection (any worker) returns it. Counts the queries that failed and any deleted
listing returned after its DELETE was acknowledged.

`engines`: the same synthetic catalogue built as an index version on each engine (FAISS files
in the facade's memory; Milvus, here milvus-lite, the embedded one), side by side: build time,
recall@10 against exact search, queries/s one query at a time (filtered and not), and memory:
the engine's files and how much this process's resident memory grew to build and load it
(milvus-lite runs in the process; a Milvus cluster holds the vectors on its own nodes).

Writes live_updates_<mode>.json and a PNG of the time-until-searchable distribution to --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import matplotlib
import numpy as np
from faiss_scale import ClusteredVectors

from fbmr.core.contract import LISTING_PATH, SIMILAR_PATH, Kind
from fbmr.serving.index.build import normalise
from fbmr.serving.index.faiss_index import FaissIndex
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.store import save_version
from fbmr.serving.index.updates import Update, UpdateLog

matplotlib.use("Agg")
import matplotlib.pyplot as plt

K = 10


def _listing(i: str) -> dict:
    return {"id": i, "name": i, "category": "c", "price": None, "location": None}


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def recall(args: argparse.Namespace) -> dict:
    space = ClusteredVectors(args.dim, seed=1)
    base, added = space.sample(args.listings, seed=2), space.sample(args.adds, seed=3)
    queries = space.sample(args.queries, seed=4)
    rng = np.random.default_rng(5)
    deleted = {str(i) for i in rng.choice(args.listings, args.deletes, replace=False)}
    kind = IndexType(args.index_type)
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "index"
        meta = {"model_version": 1}
        ids = [str(i) for i in range(args.listings)]
        started = time.perf_counter()
        save_version(index_dir, {Kind.text: base}, [_listing(i) for i in ids], meta, kind)
        build_s = time.perf_counter() - started
        live = FaissIndex(index_dir / "v0001")
        log = UpdateLog(index_dir)
        updates = [
            Update("put", f"new{i}", 1, _listing(f"new{i}"), {}, {Kind.text: v})
            for i, v in enumerate(added)
        ] + [Update("delete", i) for i in sorted(deleted)]
        rng.shuffle(updates)  # type: ignore[arg-type]
        started = time.perf_counter()
        for update in updates:
            log.append(update)
            live.catch_up()
        apply_ms = 1000 * (time.perf_counter() - started) / len(updates)

        final_ids = [i for i in ids if i not in deleted] + [f"new{i}" for i in range(args.adds)]
        vectors = {i: v for i, v in zip(ids, base, strict=True)} | {
            f"new{i}": v for i, v in enumerate(added)
        }
        final = normalise(np.stack([vectors[i] for i in final_ids]))
        truth = [[final_ids[j] for j in row] for row in np.argsort(-(queries @ final.T))[:, :K]]
        rebuilt_dir = Path(tmp) / "rebuilt"
        save_version(rebuilt_dir, {Kind.text: final}, [_listing(i) for i in final_ids], meta, kind)
        rebuilt = FaissIndex(rebuilt_dir / "v0001")

        def search(index: FaissIndex) -> list[list[str]]:
            return [[h.listing["id"] for h in index.search(Kind.text, q, K)] for q in queries]

        live_found, rebuilt_found = search(live), search(rebuilt)
    returned_deleted = sum(len(set(row) & deleted) for row in live_found)
    result = {
        "index_type": live.meta["type"],
        "listings": args.listings,
        "adds": args.adds,
        "deletes": args.deletes,
        "dim": args.dim,
        "build_s": build_s,
        "apply_ms_per_update": apply_ms,
        "recall_at_10_live": _recall(live_found, truth),
        "recall_at_10_rebuilt": _recall(rebuilt_found, truth),
        "deleted_returned": returned_deleted,
    }
    result["live_over_rebuilt"] = result["recall_at_10_live"] / result["recall_at_10_rebuilt"]
    return result


def _rss() -> int:
    """This process's resident memory (milvus-lite runs inside it), in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def engines(args: argparse.Namespace) -> dict:
    from fbmr.serving.index.filters import ListingFilter
    from fbmr.serving.index.store import open_version

    space = ClusteredVectors(args.dim, seed=1)
    vectors, queries = space.sample(args.listings, seed=2), space.sample(args.queries, seed=4)
    categories = ("a", "b", "c", "d")
    listings = [
        {"id": str(i), "name": str(i), "category": categories[i % 4], "price": float(i % 100)}
        for i in range(args.listings)
    ]
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    where = ListingFilter(category="b", price_max=50)
    kind = IndexType(args.index_type)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, uri in (("faiss", None), ("milvus", "milvus.db")):
            index_dir = Path(tmp) / engine
            rss_before = _rss()
            started = time.perf_counter()
            path = save_version(index_dir, {Kind.text: vectors}, listings, {}, kind, uri)
            build_s = time.perf_counter() - started
            index = open_version(path)
            rss_growth = _rss() - rss_before
            found = []
            started = time.perf_counter()
            for query in queries:
                found.append([int(h.listing["id"]) for h in index.search(Kind.text, query, K)])
            qps = len(queries) / (time.perf_counter() - started)
            started = time.perf_counter()
            for query in queries:
                hits = index.search(Kind.text, query, K, where)
                assert all(h.listing["category"] == "b" for h in hits)
            filtered_qps = len(queries) / (time.perf_counter() - started)
            recall_at_10 = float(
                np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
            )
            rows[engine] = {
                "type": index.meta["type"],
                "build_s": build_s,
                "recall_at_10": recall_at_10,
                "queries_per_s": qps,
                "filtered_queries_per_s": filtered_qps,
                "files_mb": _size(index_dir) / 2**20,
                "rss_growth_mb": rss_growth / 2**20,
            }
            print(engine, json.dumps(rows[engine]), flush=True)
    return {"listings": args.listings, "dim": args.dim, "queries": args.queries, **rows}


def facade(args: argparse.Namespace) -> dict:
    from fbmr.training.data.prepared import PreparedDataset

    dataset = PreparedDataset(args.data)
    photos = dataset.images("test").drop_duplicates("product_id").set_index("product_id")
    products = dataset.products("test")
    products = products[products["product_id"].isin(photos.index)]
    listings = [
        (
            p["product_id"],
            dataset.image_path(photos.loc[p["product_id"], "image_id"]).read_bytes(),
            p["product_name"],
            p["product_description"],
            dataset.text(p),
        )
        for _, p in products.iterrows()
    ]
    # as many puts as asked for, cycling through the test split under new ids
    puts = [(f"live-{i}", *listings[i % len(listings)][1:]) for i in range(args.updates)]
    fresh = httpx.Limits(max_keepalive_connections=0)  # any worker may answer each query
    stop, failed, queries = threading.Event(), [0], [0]

    def similar(client: httpx.Client, photo: bytes, text: str, k: int = K) -> list[str]:
        response = client.post(
            SIMILAR_PATH, files={"photo": ("p.jpg", photo)}, data={"text": text, "k": str(k)}
        )
        response.raise_for_status()
        return [item["id"] for item in response.json()["listings"]]

    def query_user(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=args.url, timeout=30, limits=fresh) as client:
            while not stop.is_set():
                _, photo, _, _, text = puts[rng.integers(len(puts))]
                try:
                    similar(client, photo, text)
                except httpx.HTTPError:
                    failed[0] += 1
                queries[0] += 1

    users = [threading.Thread(target=query_user, args=(i,)) for i in range(args.users)]
    for user in users:
        user.start()
    put_ms, searchable_ms, deleted, deleted_returned = [], [], [], 0
    try:
        with httpx.Client(base_url=args.url, timeout=30, limits=fresh) as client:
            for i, (listing_id, photo, name, description, text) in enumerate(puts):
                started = time.perf_counter()
                response = client.put(
                    LISTING_PATH.format(listing_id=listing_id),
                    files={"photo": ("p.jpg", photo)},
                    data={"name": name, "description": description},
                )
                response.raise_for_status()
                acknowledged = time.perf_counter()
                put_ms.append(1000 * (acknowledged - started))
                # k=20: the same listing may have been put before under other ids
                while listing_id not in similar(client, photo, text, 20):
                    pass
                searchable_ms.append(1000 * (time.perf_counter() - acknowledged))
                if i % 5 == 4:  # sell one in five again
                    client.delete(LISTING_PATH.format(listing_id=listing_id)).raise_for_status()
                    deleted.append((listing_id, photo, text))
                time.sleep(args.pause_s)
            for listing_id, photo, text in deleted:
                deleted_returned += listing_id in similar(client, photo, text, 50)
    finally:
        stop.set()
        for user in users:
            user.join()

    def pct(values: list[float]) -> dict:
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}

    plt.figure(figsize=(6, 3.5))
    plt.hist(searchable_ms, bins=30)
    plt.xlabel("ms from PUT acknowledged to returned by /v1/similar (any worker)")
    plt.ylabel("updates")
    plt.title(f"{len(puts)} puts beside {args.users} query users")
    plt.tight_layout()
    plt.savefig(args.out / "live_updates_searchable.png", dpi=120)
    return {
        "updates": len(puts),
        "users": args.users,
        "queries": queries[0],
        "queries_failed": failed[0],
        "put_ms": pct(put_ms),
        "searchable_ms": pct(searchable_ms),
        "deleted": len(deleted),
        "deleted_returned": deleted_returned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    index = modes.add_parser("recall", help="the index alone: recall after an update stream")
    index.add_argument("--listings", type=int, default=50_000)
    index.add_argument("--adds", type=int, default=10_000)
    index.add_argument("--deletes", type=int, default=2_000)
    index.add_argument("--dim", type=int, default=256, help="embedding width")
    index.add_argument("--queries", type=int, default=1_000)
    index.add_argument("--index-type", default="hnsw", choices=[t.value for t in IndexType])
    both = modes.add_parser("engines", help="FAISS beside Milvus on one catalogue")
    both.add_argument("--listings", type=int, default=100_000)
    both.add_argument("--dim", type=int, default=256, help="embedding width")
    both.add_argument("--queries", type=int, default=500)
    both.add_argument("--index-type", default="hnsw", choices=[t.value for t in IndexType])
    served = modes.add_parser("facade", help="a running facade: update latency under queries")
    served.add_argument("--url", default="http://127.0.0.1:8080")
    served.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    served.add_argument("--updates", type=int, default=100)
    served.add_argument("--users", type=int, default=8, help="concurrent query users")
    served.add_argument("--pause-s", type=float, default=0.05, help="between two puts")
    for sub in (index, both, served):
        sub.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"recall": recall, "engines": engines, "facade": facade}[args.mode](args)
    print(json.dumps(result, indent=2))
    (args.out / f"live_updates_{args.mode}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
