"""The in-process facade of the validation tests: FastAPI's TestClient over an app whose Triton URL
points at a closed port, so every check answers before a model server would be called, and a
request that passed them all gets a 503. And the similar-listing index's engines, so that one
suite of index tests runs on each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fbmr.serving.http.main import create_app
from fbmr.serving.settings import FacadeSettings
from tests.helpers import TEST_LIMITS, free_ports, split_listings
from tests.milvus_server import MilvusSandbox, milvus_unavailable


@pytest.fixture(scope="session")
def milvus_session(tmp_path_factory) -> Iterator[MilvusSandbox]:
    """A real Milvus server (the standalone server of the `milvus` wheel) for the session,
    reachable at 127.0.0.1 on a free port only (tests/milvus_server.py says how), always stopped.
    Skipped, with the reason, where its binary cannot run here. Tests take it as
    `milvus_server`."""
    reason = milvus_unavailable()
    if reason:
        pytest.skip(reason)
    sandbox = MilvusSandbox(tmp_path_factory.mktemp("milvus-server"))
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def milvus_server(milvus_session) -> Iterator[MilvusSandbox]:
    """The session's Milvus server for one test module, which leaves it with no collection: a
    module's collections are dropped after its last test (a module may share one between its
    tests), so the server does not spend the rest of the run keeping them loaded."""
    yield milvus_session
    milvus_session.drop_collections()


# The Milvus cases are integration: milvus-lite costs about a second a test on 2 cores (the index
# tests' Milvus cases were a third of the fast tier); the fast tier runs the same tests on FAISS.
@pytest.fixture(
    params=[
        "faiss",
        pytest.param("milvus-lite", marks=pytest.mark.integration),
        pytest.param("milvus-server", marks=pytest.mark.integration),
    ]
)
def milvus_uri(request) -> str | None:
    """The engine an index test builds on: None for FAISS, a milvus-lite file (relative to the
    index directory), or the URL of the session's Milvus server."""
    if request.param == "faiss":
        return None
    if request.param == "milvus-lite":
        return "milvus.db"
    server: MilvusSandbox = request.getfixturevalue("milvus_server")
    return server.uri


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
