"""FAISS indexes, their versions on disk, and the store that swaps them in."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.serving.index.build import (
    EXACT_MAX,
    HNSW_EF_SEARCH,
    HNSW_M,
    IVF_NPROBE,
    factory_string,
    resolve_type,
)
from fbmr.serving.index.faiss_index import FaissIndex, build_faiss
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.store import CURRENT, IndexStore, save_version


def _clustered(
    n: int = 400, dim: int = 16, clusters: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + 0.1 * rng.normal(size=(n, dim))).astype(np.float32), labels


@pytest.mark.parametrize("kind", list(IndexType))
def test_every_index_type_finds_each_vector_and_its_cluster(kind):
    vectors, labels = _clustered()
    index = build_faiss(vectors, kind)
    scores, ids = index.search(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 5)
    assert (ids[:, 0] == np.arange(len(vectors))).mean() > 0.95
    assert (labels[ids] == labels[:, None]).mean() > 0.95
    assert np.all(scores[:, 0] <= 1.0 + 1e-5)


def _listings(n: int) -> list[dict]:
    return [
        {"id": str(i), "name": f"item {i}", "category": "c", "price": None, "location": None}
        for i in range(n)
    ]


def test_versions_are_written_aside_and_current_moves(tmp_path):
    vectors, _ = _clustered(50)
    first = save_version(tmp_path, {Kind.combined: vectors}, _listings(50), {"note": "a"})
    second = save_version(
        tmp_path, {Kind.combined: vectors[:10]}, _listings(10), {}, IndexType.hnsw
    )
    assert [first.name, second.name] == ["v0001", "v0002"]
    assert (tmp_path / CURRENT).read_text().strip() == "v0002"
    assert not list(tmp_path.glob(".*partial"))
    loaded = FaissIndex(second)
    assert loaded.meta["type"] == "hnsw" and loaded.meta["count"] == 10
    hits = loaded.search(Kind.combined, vectors[3], 3)
    assert hits[0].listing["id"] == "3" and len(hits) == 3
    with pytest.raises(KeyError, match="no image embeddings"):
        loaded.search(Kind.image, vectors[3], 3)


def test_store_reloads_only_when_current_changes(tmp_path):
    vectors, _ = _clustered(20)
    store = IndexStore(tmp_path)
    assert store.reload() is False and store.current is None
    save_version(tmp_path, {Kind.text: vectors}, _listings(20), {})
    assert store.reload() is True and store.current.version == "v0001"
    assert store.reload() is False
    assert store.reload(force=True) is True
    save_version(tmp_path, {Kind.text: vectors}, _listings(20), {})
    assert store.reload() is True and store.current.version == "v0002"


def test_inconsistent_inputs_are_refused(tmp_path):
    vectors, _ = _clustered(20)
    with pytest.raises(ValueError, match="20 vectors for 19 listings"):
        save_version(tmp_path, {Kind.text: vectors}, _listings(19), {})
    with pytest.raises(ValueError, match="at least one listing"):
        save_version(tmp_path, {Kind.text: vectors[:0]}, [], {})
    (tmp_path / "v0009").mkdir()
    (tmp_path / "v0009" / "meta.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an fbmr index"):
        FaissIndex(tmp_path / "v0009")


def test_auto_chooses_by_catalogue_size_and_records_the_choice(tmp_path):
    assert resolve_type(IndexType.auto, EXACT_MAX) is IndexType.exact
    # no GPU here: above the exact limit, the graph index (IVF is for faiss-gpu)
    assert resolve_type(IndexType.auto, EXACT_MAX + 1) is IndexType.hnsw
    assert resolve_type(IndexType.ivf, 10) is IndexType.ivf
    vectors, _ = _clustered(80)
    path = save_version(tmp_path, {Kind.combined: vectors}, _listings(80), {})
    assert FaissIndex(path).meta["type"] == "exact"
    # the measured search settings travel inside the saved index
    hnsw = faiss.read_index(str(save_version(
        tmp_path, {Kind.combined: vectors}, _listings(80), {}, IndexType.hnsw
    ) / "combined.faiss"))  # fmt: skip
    assert hnsw.hnsw.efSearch == HNSW_EF_SEARCH
    assert build_faiss(vectors, IndexType.ivf).nprobe == min(IVF_NPROBE, 2)  # 80 // 39 lists


def test_served_indexes_are_named_by_faiss_factory_strings():
    assert factory_string(IndexType.exact, 10) == "Flat"
    assert factory_string(IndexType.auto, EXACT_MAX) == "Flat"
    assert factory_string(IndexType.hnsw, 10) == f"HNSW{HNSW_M}"
    assert factory_string(IndexType.ivf, 80) == "IVF2,Flat"  # 80 // 39 lists
    assert factory_string(IndexType.ivf, 80, nlist=4) == "IVF4,Flat"
    vectors, _ = _clustered(80)
    served = build_faiss(vectors, IndexType.ivf)
    assert isinstance(served, faiss.IndexIVFFlat) and served.ntotal == 80
    assert served.metric_type == faiss.METRIC_INNER_PRODUCT
