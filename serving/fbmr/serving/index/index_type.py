"""The kinds of similar-listing index `fbmr index build --type` offers; apart from the index module
so that the CLI can name them without importing FAISS."""

from __future__ import annotations

from enum import StrEnum


class IndexType(StrEnum):
    auto = "auto"  # by catalogue size: exact up to EXACT_MAX, then hnsw (ivf where faiss has a GPU)
    exact = "exact"  # brute force: exact, best under ~100k listings
    ivf = "ivf"  # inverted lists: approximate, trained on the catalogue
    hnsw = "hnsw"  # graph: approximate, no training, CPU only
