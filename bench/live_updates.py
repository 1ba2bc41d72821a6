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

`engines`: the same synthetic catalogue built as an index version on each of --engines
(`faiss`: files in the facade's memory; `milvus-server`: the standalone Milvus server of the
`milvus` wheel, started here in the tests' sandbox, tests/milvus_server.py, and always stopped;
`milvus-lite`: the embedded Milvus, in this process), through the code the facade serves
(`save_version`, `open_version`), side by side: build time (and, on the server, the time until
every row is indexed), memory (this process's resident growth for the embedded engines, the
server's process tree above its idle size for the server) and files; then recall@10 against
exact search, queries/s and p50/p99 latency at 1 client and at --clients threads, unfiltered
and with a price filter that exactly 1%, 10% and 50% of the listings pass (recall against exact
search over those). On the server, the searches run again at Bounded consistency (the facade's
collections are Strong, which waits for the server's time tick).

Writes live_updates_<mode>.json to --out, with a PNG: for `facade`, the time-until-searchable
distribution; for `engines`, queries/s and recall by filter.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import numpy as np
from faiss_scale import ClusteredVectors
from numpy.typing import NDArray

from fbmr.core.contract import LISTING_PATH, SIMILAR_PATH, Kind
from fbmr.serving.index.build import normalise
from fbmr.serving.index.faiss_index import FaissIndex
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.store import save_version
from fbmr.serving.index.updates import Update, UpdateLog

matplotlib.use("Agg")
import matplotlib.pyplot as plt

K = 10


def _listing(i: str) -> dict[str, Any]:
    return {"id": i, "name": i, "category": "c", "price": None, "location": None}


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def recall(args: argparse.Namespace) -> dict[str, Any]:
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
    """This process's resident memory (FAISS and milvus-lite run inside it), in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def _tree_rss(pid: int) -> int:
    """The resident memory of process `pid` and all its descendants (the Milvus server), bytes."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# Prices 0..99, each on exactly 1% of the catalogue: a filter `price <= MAX` passes (MAX + 1)%
SELECTIVITY = {"1%": 0.0, "10%": 9.0, "50%": 49.0}
ENGINES = ("faiss", "milvus-lite", "milvus-server")


def exact_top(
    queries: NDArray[np.float32],
    vectors: NDArray[np.float32],
    passing: NDArray[np.bool_] | None = None,
    chunk: int = 50_000,
) -> NDArray[np.int64]:
    """The K nearest (inner product) of each query among `vectors` (those `passing`, if
    given), by brute force in chunks of the catalogue: row positions, nearest first."""
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), K), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        rows = np.arange(start, min(start + chunk, len(vectors)))
        if passing is not None:
            rows = rows[passing[rows]]
        if len(rows) == 0:
            continue
        scores = np.concatenate([best_scores, queries @ vectors[rows].T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(rows, (len(queries), len(rows)))], axis=1)
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best_ids = np.take_along_axis(ids, top, axis=1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_ids, order, axis=1)


def _recall_ids(found: list[list[int]], truth: NDArray[np.int64]) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def throughput(
    search: Callable[[NDArray[np.float32]], list[int]],
    queries: NDArray[np.float32],
    clients: int,
    seconds: float,
    max_s: float,
) -> tuple[dict[str, float], list[list[int]]]:
    """`clients` threads send the queries in turn, round and round, for `seconds` and at least
    until each was sent once (but never past `max_s`): queries/s, p50 and p99 latency in ms,
    and what each query answered the first time (empty where not reached)."""
    found: list[list[int]] = [[] for _ in queries]
    latencies: list[float] = []
    sent = itertools.count()
    lock = threading.Lock()
    started = time.perf_counter()

    def client() -> None:
        while True:
            with lock:
                i = next(sent)
            elapsed = time.perf_counter() - started
            if elapsed > max_s or (elapsed > seconds and i >= len(queries)):
                return
            before = time.perf_counter()
            answer = search(queries[i % len(queries)])
            latencies.append(1000 * (time.perf_counter() - before))
            if i < len(queries):
                found[i] = answer

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "queries": len(latencies),
        "queries_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }, found


@contextlib.contextmanager
def engine_uri(engine: str, tmp: Path) -> Iterator[tuple[str | None, Callable[[], int]]]:
    """Where `engine` keeps an index version (None: FAISS files) and how to read the resident
    memory it holds: this process's for the embedded engines, the server's process tree for
    the Milvus server (started here in its sandbox, see tests/milvus_server.py, and always
    stopped)."""
    if engine == "faiss":
        yield None, _rss
    elif engine == "milvus-lite":
        yield "milvus.db", _rss
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.milvus_server import milvus_sandbox

        with milvus_sandbox(tmp / "milvus-server") as sandbox:
            yield sandbox.uri, lambda: _tree_rss(sandbox.process.pid)


def wait_indexed(path: Path, uri: str, timeout_s: float = 3600) -> None:
    """Wait until the Milvus server has built the index of every row of the version at `path`,
    then load its collections again, so that searches read the index, not segments still
    searched by brute force."""
    from pymilvus import MilvusClient

    collections = json.loads((path / "meta.json").read_text())["collections"].values()
    client = MilvusClient(uri=uri)
    deadline = time.monotonic() + timeout_s
    try:
        for name in collections:
            while True:
                index = client.describe_index(name, "vector")
                if index.get("pending_index_rows", 1) == 0 and index["indexed_rows"] > 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: index not built in {timeout_s:.0f} s: {index}")
                time.sleep(1)
            client.release_collection(name)
            client.load_collection(name)
    finally:
        client.close()


def measure_engine(
    engine: str, tmp: Path, data: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """One engine's row: build, memory, then searches, unfiltered and at each selectivity."""
    from fbmr.serving.index.milvus_index import MilvusIndex
    from fbmr.serving.index.store import open_version

    vectors, queries = data["vectors"], data["queries"]
    row: dict[str, Any] = {}
    with engine_uri(engine, tmp) as (uri, memory):
        index_dir = tmp / engine
        memory_before = memory()
        started = time.perf_counter()
        path = save_version(
            index_dir, {Kind.text: vectors}, data["listings"], {}, IndexType(args.index_type), uri
        )
        row["build_s"] = time.perf_counter() - started
        if engine == "milvus-server":
            assert uri is not None
            wait_indexed(path, uri)
            row["indexed_s"] = time.perf_counter() - started
        gc.collect()
        memory_built = memory()
        started = time.perf_counter()
        index = open_version(path, None, uri)
        row["open_s"] = time.perf_counter() - started
        memory_open = memory()
        row |= {
            "type": index.meta["type"],
            "files_mb": _size(index_dir) / 2**20,
            "memory_before_mb": memory_before / 2**20,
            "memory_mb": memory_open / 2**20,
            "memory_growth_mb": (memory_open - memory_before) / 2**20,
            "memory_open_mb": (memory_open - memory_built) / 2**20,
        }
        print(engine, "built", json.dumps(row), flush=True)
        row["searches"] = search_cases(index, queries, data["truth"], args)
        if isinstance(index, MilvusIndex) and engine == "milvus-server":
            # the same searches without waiting for the server's time tick: what a collection
            # of Bounded consistency would give (the facade's are Strong, to read its writes)
            search = index.client.search
            index.client.search = functools.partial(search, consistency_level="Bounded")
            row["searches_bounded"] = search_cases(index, queries, data["truth"], args)
        if isinstance(index, MilvusIndex):
            index.close()
    return row


def search_cases(
    index: Any, queries: NDArray[np.float32], truth: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """`search_case` unfiltered and at each selectivity."""
    from fbmr.serving.index.filters import ListingFilter

    cases = {"none": ListingFilter()}
    cases |= {share: ListingFilter(price_max=top) for share, top in SELECTIVITY.items()}
    found = {}
    for case, where in cases.items():
        found[case] = search_case(index, where, queries, truth[case], args)
        print(" ", case, json.dumps(found[case]), flush=True)
    return found


def search_case(
    index: Any,
    where: Any,
    queries: NDArray[np.float32],
    truth: NDArray[np.int64],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Recall@10 and speed of one kind of search: at 1 client (every query, for the recall),
    then at --clients threads."""

    def search(query: NDArray[np.float32]) -> list[int]:
        return [int(h.listing["id"]) for h in index.search(Kind.text, query, K, where)]

    for query in queries[:10]:  # warm-up
        search(query)
    one, found = throughput(search, queries, 1, args.seconds, args.max_s)
    reached = [i for i, f in enumerate(found) if f]
    many, _ = throughput(search, queries, args.clients, args.seconds, args.max_s)
    return {
        "recall_at_10": _recall_ids([found[i] for i in reached], truth[reached]),
        "1_client": one,
        f"{args.clients}_clients": many,
    }


def plot_engines(result: dict[str, Any], path: Path) -> None:
    """Queries/s (log scale) and recall@10 of each engine's searches, by filter."""
    runs = [
        (f"{engine}{' (Bounded)' if key.endswith('bounded') else ''}", result[engine][key])
        for engine in ENGINES
        if engine in result
        for key in ("searches", "searches_bounded")
        if key in result[engine]
    ]
    cases = ["none", *SELECTIVITY]
    clients = f"{result['clients']}_clients"
    figure, (speed, recall) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(runs)
    for n, (name, searches) in enumerate(runs):
        x = np.arange(len(cases)) + n * width
        for axis, values in (
            (speed, [searches[c][clients]["queries_per_s"] for c in cases]),
            (recall, [searches[c]["recall_at_10"] for c in cases]),
        ):
            axis.bar(x, values, width, label=name)
    for axis, label in ((speed, f"queries/s, {result['clients']} clients"), (recall, "recall@10")):
        axis.set_xticks(np.arange(len(cases)) + 0.4 - width / 2, ["no filter", *cases[1:]])
        axis.set_ylabel(label)
    speed.set_yscale("log")
    recall.set_ylim(0.9, 1.0)
    speed.legend(fontsize=8)
    figure.suptitle(f"{result['listings']:,} listings of width {result['dim']}, HNSW32")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def engines(args: argparse.Namespace) -> dict[str, Any]:
    space = ClusteredVectors(args.dim, seed=1)
    vectors, queries = space.sample(args.listings, seed=2), space.sample(args.queries, seed=4)
    # each price on exactly 1% of the listings, shuffled across the catalogue
    prices = np.random.default_rng(6).permutation(np.arange(args.listings) % 100).astype(float)
    categories = ("a", "b", "c", "d")
    listings = [
        {"id": str(i), "name": str(i), "category": categories[i % 4], "price": float(p)}
        for i, p in enumerate(prices)
    ]
    started = time.perf_counter()
    truth = {"none": exact_top(queries, vectors)} | {
        share: exact_top(queries, vectors, prices <= top) for share, top in SELECTIVITY.items()
    }
    exact_s = time.perf_counter() - started
    print(f"exact search: {exact_s:.1f} s", flush=True)
    data = {"vectors": vectors, "queries": queries, "listings": listings, "truth": truth}
    result: dict[str, Any] = {
        "listings": args.listings,
        "dim": args.dim,
        "queries": args.queries,
        "clients": args.clients,
        "exact_truth_s": exact_s,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            result[engine] = measure_engine(engine, Path(tmp), data, args)
            (args.out / "live_updates_engines.json").write_text(json.dumps(result, indent=2))
    plot_engines(result, args.out / "live_updates_engines.png")
    return result


def facade(args: argparse.Namespace) -> dict[str, Any]:
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

    def pct(values: list[float]) -> dict[str, float]:
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
    both.add_argument("--engines", nargs="+", choices=ENGINES, default=["faiss", "milvus-server"])
    both.add_argument("--clients", type=int, default=8, help="threads of the concurrent runs")
    both.add_argument("--seconds", type=float, default=10, help="one timed run, at least")
    both.add_argument("--max-s", type=float, default=60, help="one timed run, at most")
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
