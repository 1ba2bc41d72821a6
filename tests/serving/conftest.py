"""The in-process facade of the validation tests: FastAPI's TestClient over an app whose Triton URL
points at a closed port, so every check answers before a model server would be called, and a
request that passed them all gets a 503. And the similar-listing index's engines, so that one
suite of index tests runs on each."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fbmr.serving.http.main import create_app
from fbmr.serving.settings import FacadeSettings
from tests.helpers import TEST_LIMITS, free_ports, split_listings


# The Milvus cases are integration: milvus-lite costs about a second a test on 2 cores (the index
# tests' 30 Milvus cases were a third of the fast tier); the fast tier runs the same tests on FAISS.
@pytest.fixture(params=["faiss", pytest.param("milvus", marks=pytest.mark.integration)])
def milvus_uri(request) -> str | None:
    """The engine an index test builds on: None for FAISS, or a milvus-lite file (relative to
    the index directory) for Milvus."""
    return None if request.param == "faiss" else "milvus.db"


@pytest.fixture(scope="module")
def offline_settings(artifact_repository) -> FacadeSettings:
    (closed,) = free_ports(1)
    return FacadeSettings(
        triton_url=f"127.0.0.1:{closed}",
        triton_timeout_s=5,
        model_repository=artifact_repository,
        index_dir=None,
        **TEST_LIMITS,
    )


@pytest.fixture(scope="module")
def offline_client(offline_settings):
    with TestClient(create_app(offline_settings)) as client:
        yield client


@pytest.fixture(scope="session")
def listings(demo_prepared) -> list[tuple[bytes, str]]:
    """Six validation listings of the demo data, as (photo bytes, listing text)."""
    return [(photo, text) for photo, text, _ in split_listings(demo_prepared, "val")[:6]]
