"""The similar-listing index at catalogue scale: exact search against IVF (nlist, nprobe sweep)
and HNSW (efSearch sweep) on synthetic clustered vectors of the embedding width, and on a real
index's embeddings when one is given: recall@10 against exact, queries/s one at a time and
batched, build time and index size.

    uv run python bench/faiss_scale.py                                  # 100k and 1M vectors
    uv run python bench/faiss_scale.py --sizes 1000000 --hnsw-max 1000000 --index-dir INDEX

Vectors are L2-normalised and searched by inner product, as `fbmr index build` does. The
synthetic catalogue is clustered in a low-dimensional latent space (see ClusteredVectors), so
the approximate indexes are tested on structure rather than on uniform noise, where no index
beats brute force; queries are fresh draws from the same distribution. Indexes are faiss
factory strings ("Flat", "IVF1024,Flat", "HNSW32") built by the builder `fbmr index build` uses
(`fbmr.serving.index.build`: IVF trained on a sample of 50 vectors per list, 10 k-means
iterations), and the IVF sweep includes the number of lists it serves with, so what is measured
is what serves. HNSW is built only for sizes up to --hnsw-max (its build is the slowest step:
minutes per 100k vectors on 2 cores).
Writes faiss_scale.json and faiss_scale.md to --out and the recall/QPS plot to --plot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from figures import plt, save
from numpy.typing import NDArray

from fbmr.serving.index.build import (
    TRAIN_PER_LIST,
    faiss_index_from_factory,
    gpu_count,
    ivf_lists,
    normalise,
    on_gpu,
    set_search,
)

K = 10


class ClusteredVectors:
    """Unit vectors with the structure of learned embeddings: a mixture of `clusters` Gaussian
    clusters in a low-dimensional latent space (neighbouring clusters overlap, so a neighbourhood
    crosses cluster and IVF-cell borders), mapped linearly to `dim` dimensions, plus a little
    isotropic noise in all of them. With these settings IVF's recall@10 against nprobe has the
    shape it has on public embedding benchmarks (for 256 lists over 100k vectors: about 0.27 at
    nprobe 1, 0.6 at 4, 0.9 at 16, 0.999 at 64), rather than the all-or-nothing of
    well-separated clusters (where every neighbour shares the query's cell) or of uniform noise
    (where none does)."""

    def __init__(
        self,
        dim: int,
        latent: int = 16,
        clusters: int = 10_000,
        spread: float = 1.5,
        noise: float = 0.1,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.projection = rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)
        self.centres = spread * rng.standard_normal((clusters, latent), dtype=np.float32)
        self.dim, self.latent, self.noise = dim, latent, noise

    def sample(self, count: int, seed: int, chunk: int = 100_000) -> NDArray[Any]:
        rng = np.random.default_rng(seed)
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            z = self.centres[rng.integers(0, len(self.centres), n)]
            z = z + rng.standard_normal((n, self.latent), dtype=np.float32)
            out[start : start + n] = z @ self.projection + self.noise * rng.standard_normal(
                (n, self.dim), dtype=np.float32
            )
        return normalise(out)


class Device:
    """Where Flat and IVF indexes live: the first GPU when faiss has GPU support and sees one
    (faiss-gpu, `fbmr-serving[gpu]`), else the CPU; HNSW is CPU only, as in serving."""

    def __init__(self, allow_gpu: bool) -> None:
        self.resources = faiss.StandardGpuResources() if allow_gpu and gpu_count() else None

    @property
    def name(self) -> str:
        return "gpu" if self.resources is not None else "cpu"

    def place(self, index: faiss.Index, factory: str) -> faiss.Index:
        if self.resources is None or factory.startswith("HNSW"):
            return index
        return faiss.index_cpu_to_gpu(self.resources, 0, index)

    @staticmethod
    def bytes(index: faiss.Index) -> int:
        cpu = faiss.index_gpu_to_cpu(index) if on_gpu(index) else index
        return int(faiss.serialize_index(cpu).size)


def build(
    factory: str,
    base: NDArray[Any],
    device: Device,
    train_per_list: int = TRAIN_PER_LIST,
    seed: int = 0,
) -> tuple[faiss.Index, float]:
    """The index of a factory string as `fbmr index build` builds it, on `device`; build s."""
    started = time.perf_counter()
    index = faiss_index_from_factory(
        factory,
        base,
        place=lambda empty: device.place(empty, factory),
        train_per_list=train_per_list,
        seed=seed,
    )
    return index, time.perf_counter() - started


def recall_at_k(found: NDArray[Any], truth: NDArray[Any]) -> float:
    hits = sum(len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def timed_search(
    index: faiss.Index, queries: NDArray[Any], single: int, repeats: int = 3
) -> tuple[NDArray[Any], float, float]:
    """(ids of every query, batched queries/s, one-at-a-time queries/s).

    Batched: all queries in one call, on every thread, the fastest of `repeats` calls. One at a
    time: `single` queries on one thread, as the facade searches (one query per request, other
    requests on the other cores); queries/s is 1 / the median CPU time of the searching thread
    per query, so that waiting for a core on a shared machine does not count (it is what one
    unloaded core would do). Best-of and CPU time keep the figures steady on a shared machine.
    """
    ids = None
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        _, ids = index.search(queries, K)
        best = min(best, time.perf_counter() - started)
    assert ids is not None  # repeats >= 1
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    for i in range(single):
        started = time.thread_time()
        index.search(queries[i % len(queries) : i % len(queries) + 1], K)
        times.append(time.thread_time() - started)
    faiss.omp_set_num_threads(threads)
    return ids, len(queries) / best, 1.0 / float(np.median(times))


def sweep(
    name: str,
    base: NDArray[Any],
    queries: NDArray[Any],
    nlists: list[int],
    nprobes: list[int],
    hnsw: bool,
    ef_searches: list[int],
    single: int,
    device: Device,
    train_per_list: int = TRAIN_PER_LIST,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Every index and search setting on one catalogue; the first row is exact search."""
    rows: list[dict[str, Any]] = []

    def record(factory: str, setting: str, index: faiss.Index, build_s: float, size: int) -> None:
        ids, batched, one = timed_search(index, queries, single, repeats)
        row = {
            "catalogue": name,
            "vectors": len(base),
            "index": factory,
            "search": setting,
            "recall_at_10": 1.0 if truth is None else recall_at_k(ids, truth),
            "qps_batched": batched,
            "qps_single": one,
            "build_s": build_s,
            "bytes": size,
        }
        rows.append(row)
        print(
            f"{name} {len(base):>8} {factory:<14} {setting:<12} recall@10 "
            f"{row['recall_at_10']:.3f}  {batched:9.0f} q/s batched  {one:8.1f} q/s single  "
            f"build {build_s:6.1f} s  {size / 2**20:7.1f} MiB",
            flush=True,
        )

    truth = None
    flat, build_s = build("Flat", base, device)
    size = device.bytes(flat)
    _, truth = flat.search(queries, K)
    record("Flat", "exact", flat, build_s, size)
    del flat

    for nlist in nlists:
        if nlist * train_per_list > len(base) * 4:
            continue
        factory = f"IVF{nlist},Flat"
        index, build_s = build(factory, base, device, train_per_list)
        size = device.bytes(index)
        for nprobe in nprobes:
            if nprobe > nlist:
                continue
            set_search(index, "nprobe", nprobe)
            record(factory, f"nprobe={nprobe}", index, build_s, size)
        del index

    if hnsw:
        index, build_s = build("HNSW32", base, device)
        size = device.bytes(index)
        for ef in ef_searches:
            set_search(index, "efSearch", ef)
            record("HNSW32", f"efSearch={ef}", index, build_s, size)
        del index
    return rows


def real_embeddings(index_dir: Path, kind: str) -> NDArray[Any]:
    """The vectors of a real index version (INDEX_DIR/CURRENT), L2-normalised already."""
    version = (index_dir / "CURRENT").read_text().strip()
    index = faiss.read_index(str(index_dir / version / f"{kind}.faiss"))
    vectors: NDArray[Any] = index.reconstruct_n(0, index.ntotal)
    return vectors


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| catalogue | vectors | index | search | recall@10 | q/s batched | q/s one at a time "
        "| x exact (single) | build | size |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    exact: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if r["search"] == "exact":
            exact[(r["catalogue"], r["vectors"])] = r
        e = exact[(r["catalogue"], r["vectors"])]
        lines.append(
            f"| {r['catalogue']} | {r['vectors']:,} | {r['index']} | {r['search']} "
            f"| {r['recall_at_10']:.3f} | {r['qps_batched']:,.0f} | {r['qps_single']:,.1f} "
            f"| {r['qps_single'] / e['qps_single']:.1f} | {r['build_s']:.1f} s "
            f"| {r['bytes'] / 2**20:,.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    groups = sorted({(r["catalogue"], r["vectors"]) for r in rows}, key=lambda g: (g[0], g[1]))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, key, title in (
        (axes[0], "qps_single", "one query at a time"),
        (axes[1], "qps_batched", "batched queries"),
    ):
        for catalogue, vectors in groups:
            subset = [r for r in rows if (r["catalogue"], r["vectors"]) == (catalogue, vectors)]
            for factory in dict.fromkeys(r["index"] for r in subset):
                points = [r for r in subset if r["index"] == factory]
                marker = "*" if factory == "Flat" else "o"
                axis.plot(
                    [p[key] for p in points],
                    [p["recall_at_10"] for p in points],
                    marker=marker,
                    markersize=10 if factory == "Flat" else 4,
                    label=f"{catalogue} {vectors:,}: {factory}",
                )
        axis.set_xscale("log")
        axis.set_xlabel("queries/s (log)")
        axis.set_title(title)
        axis.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("recall@10 against exact")
    axes[1].legend(fontsize=7, loc="lower left")
    save(figure, path, "Similar-listing index: recall against speed (inner product, unit vectors)")


def pow2(x: float) -> int:
    power: int = 2 ** round(math.log2(max(1.0, x)))
    return power


def default_lists(count: int) -> list[int]:
    """IVF list counts to sweep: about sqrt(n), and the count `fbmr index build` serves with."""
    return sorted({pow2(math.sqrt(count)), ivf_lists(count)})


def write_json(
    path: Path, args: argparse.Namespace, device: Device, rows: list[dict[str, Any]]
) -> None:
    summary = {"dim": args.dim, "threads": args.threads, "device": device.name, "rows": rows}
    path.write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256, help="embedding width (fbmr's default)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="largest size for HNSW")
    parser.add_argument(
        "--nlist", type=int, nargs="*", help="IVF lists (default: about sqrt(n) and as served)"
    )
    parser.add_argument("--train-per-list", type=int, default=TRAIN_PER_LIST)
    parser.add_argument("--repeats", type=int, default=3, help="batched searches, best of")
    parser.add_argument("--index-dir", type=Path, help="a real index (fbmr index build)")
    parser.add_argument("--kind", default="combined", help="which of its embeddings")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--cpu", action="store_true", help="stay on the CPU even where faiss sees a GPU"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/faiss_scale"))
    parser.add_argument("--plot", type=Path, default=None, help="default OUT/faiss_scale.png")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="measure nothing: the table and plot of earlier runs' faiss_scale.json, merged",
    )
    args = parser.parse_args()
    if args.from_json:
        rows: list[dict[str, Any]] = [
            r for path in args.from_json for r in json.loads(path.read_text())["rows"]
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "faiss_scale.md").write_text(markdown(rows))
        plot(rows, args.plot or args.out / "faiss_scale.png")
        print(markdown(rows))
        return
    faiss.omp_set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    device = Device(allow_gpu=not args.cpu)
    print(f"Flat and IVF indexes on the {device.name}; HNSW on the cpu", flush=True)

    rows = []
    if args.index_dir:
        real = real_embeddings(args.index_dir, args.kind)
        n = len(real)
        queries = real[np.random.default_rng(1).choice(n, min(n, args.queries), replace=False)]
        rows += sweep(
            "real",
            real,
            queries,
            default_lists(n),
            args.nprobe,
            True,
            args.ef_search,
            args.single,
            device,
            args.train_per_list,
            args.repeats,
        )
    source = ClusteredVectors(args.dim)
    queries = source.sample(args.queries, seed=1)
    for size in args.sizes:
        base = source.sample(size, seed=2)
        nlists = args.nlist or default_lists(size)
        rows += sweep(
            "synthetic",
            base,
            queries,
            nlists,
            args.nprobe,
            size <= args.hnsw_max,
            args.ef_search,
            args.single,
            device,
            args.train_per_list,
            args.repeats,
        )
        del base
        # written after every size, so that an interrupted run keeps what it measured
        write_json(args.out / "faiss_scale.json", args, device, rows)
    write_json(args.out / "faiss_scale.json", args, device, rows)
    table = markdown(rows)
    (args.out / "faiss_scale.md").write_text(table)
    plot(rows, args.plot or args.out / "faiss_scale.png")
    print(table)


if __name__ == "__main__":
    main()
