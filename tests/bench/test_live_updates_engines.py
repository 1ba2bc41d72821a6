"""The FAISS-beside-Milvus benchmark's ground truth and timed runs (bench/live_updates.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from live_updates import K, exact_top, throughput


def test_exact_top_is_a_full_sort_done_in_chunks() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1_000, 8), dtype=np.float32)
    queries = rng.standard_normal((5, 8), dtype=np.float32)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    assert (exact_top(queries, vectors, chunk=64) == expected).all()


def test_exact_top_over_the_passing_rows_only() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 8), dtype=np.float32)
    queries = rng.standard_normal((3, 8), dtype=np.float32)
    passing = np.arange(500) % 10 == 3
    rows = np.flatnonzero(passing)
    expected = rows[np.argsort(-(queries @ vectors[rows].T), axis=1)[:, :K]]
    assert (exact_top(queries, vectors, passing, chunk=37) == expected).all()


def test_throughput_sends_each_query_and_keeps_its_first_answer() -> None:
    queries = np.arange(20, dtype=np.float32)[:, None]
    stats, found = throughput(lambda q: [int(q[0])], queries, 4, seconds=0.0, max_s=10)
    assert found == [[i] for i in range(20)]
    assert stats["queries"] >= 20 and stats["queries_per_s"] > 0
