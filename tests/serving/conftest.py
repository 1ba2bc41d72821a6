"""The facade served by a real uvicorn on a free 127.0.0.1 port, against the session's Triton."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from fbmr.serving.app import create_app
from fbmr.serving.settings import FacadeSettings
from tests.helpers import free_ports


@contextmanager
def running_facade(settings: FacadeSettings):
    """Yields an httpx client on a facade started in a thread; stops it on exit."""
    (port,) = free_ports(1)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the facade did not start")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def demo_index(triton, cpu_repository, demo_prepared, tmp_path_factory):
    """The demo catalogue's train and val listings, embedded through Triton and indexed."""
    from fbmr.serving.catalogue import build_index

    index_dir = tmp_path_factory.mktemp("index") / "index"
    build_index(
        demo_prepared, index_dir, triton.ports.grpc_url, cpu_repository,
        splits=("train", "val"), progress=False,
    )  # fmt: skip
    return index_dir


@pytest.fixture(scope="session")
def facade_settings(triton, cpu_repository, demo_index) -> FacadeSettings:
    return FacadeSettings(
        triton_url=triton.ports.grpc_url,
        model_repository=cpu_repository,
        index_dir=demo_index,
        index_poll_s=0,
        max_body_bytes=2_000_000,
        max_pixels=4_000_000,
        max_text_chars=2_000,
        max_k=50,
    )


@pytest.fixture(scope="session")
def facade(facade_settings):
    with running_facade(facade_settings) as client:
        yield client
