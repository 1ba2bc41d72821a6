"""Building a similar-listing index from a faiss factory string ("Flat", "IVF1024,Flat",
"HNSW32"), trained one way and given its search settings one way, so that the index
`fbmr index build` serves is the index `bench/faiss_scale.py` measures.

Vectors are L2-normalised and compared by inner product (cosine similarity).
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np
from numpy.typing import NDArray

from fbmr.serving.index.index_type import IndexType

# Defaults by catalogue size, from bench/faiss_scale.py (docs/results.md): exact search costs
# about 8 ms a query on one core at 100k x 256, below one ResNet-50 pass; past that HNSW32 at
# efSearch 64 gave recall@10 0.999 at 20x exact's queries/s (faiss's default 16: 0.961), and IVF
# with ~4 sqrt(n) lists at nprobe 64 gave 0.972 at 49x exact at 1M vectors.
EXACT_MAX = 100_000
HNSW_M = 32
HNSW_EF_SEARCH = 64
IVF_NPROBE = 64
# IVF's coarse quantiser is trained on a sample of this many vectors per list, with this many
# k-means iterations, to bound the build time at millions of vectors (the benchmark's figures
# were measured so); faiss warns below 39 training vectors per list, hence at most n / 39 lists.
TRAIN_PER_LIST = 50
KMEANS_ITERATIONS = 10
MIN_TRAIN_PER_LIST = 39


def normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)
    return normalised


def gpu_count() -> int:
    """GPUs faiss sees (0 without faiss-gpu)."""
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def resolve_type(kind: IndexType, count: int) -> IndexType:
    """`auto` made concrete for a catalogue of `count` listings; other types as they are."""
    if kind is not IndexType.auto:
        return kind
    if count <= EXACT_MAX:
        return IndexType.exact
    return IndexType.ivf if gpu_count() else IndexType.hnsw  # HNSW cannot move to a GPU


def ivf_lists(count: int) -> int:
    """~4 sqrt(n) lists, each trained on at least MIN_TRAIN_PER_LIST vectors."""
    return max(1, min(4 * int(np.sqrt(count)), count // MIN_TRAIN_PER_LIST))


def factory_string(kind: IndexType, count: int, nlist: int = 0) -> str:
    """The faiss factory string of an index type for a catalogue of `count` listings."""
    kind = resolve_type(kind, count)
    if kind is IndexType.exact:
        return "Flat"
    if kind is IndexType.hnsw:
        return f"HNSW{HNSW_M}"
    return f"IVF{nlist or ivf_lists(count)},Flat"


def on_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__


def to_gpu_if_available(index: faiss.Index) -> faiss.Index:
    """The index on the first GPU when faiss has GPU support and sees one (HNSW stays on CPU)."""
    if gpu_count() == 0 or isinstance(index, faiss.IndexHNSW):
        return index
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def set_search(index: faiss.Index, parameter: str, value: int) -> None:
    """A search setting ("nprobe", "efSearch") on a CPU or GPU index."""
    space = faiss.GpuParameterSpace() if on_gpu(index) else faiss.ParameterSpace()
    space.set_index_parameter(index, parameter, value)


def serving_search(index: faiss.Index) -> faiss.Index:
    """`index` with the search settings the facade serves with (saved in the index file)."""
    if isinstance(index, faiss.IndexHNSW):
        set_search(index, "efSearch", HNSW_EF_SEARCH)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        set_search(index, "nprobe", min(ivf.nlist, IVF_NPROBE))
    return index


def faiss_index_from_factory(
    factory: str,
    vectors: NDArray[np.float32],
    place: Callable[[faiss.Index], faiss.Index] | None = None,
    train_per_list: int = TRAIN_PER_LIST,
    seed: int = 0,
) -> faiss.Index:
    """An inner-product index over L2-normalised `vectors` from a factory string: trained when it
    needs training (IVF, see TRAIN_PER_LIST), then filled. `place` moves the empty index first
    (to a GPU, for the benchmark); search settings are faiss's defaults (see `serving_search`)."""
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.niter = KMEANS_ITERATIONS
    if place is not None:
        index = place(index)
    if not index.is_trained:
        lists = ivf.nlist if ivf is not None else 1
        sample = min(len(vectors), train_per_list * lists)
        rows = np.random.default_rng(seed).choice(len(vectors), sample, replace=False)
        index.train(vectors[np.sort(rows)])
    index.add(vectors)
    return index
