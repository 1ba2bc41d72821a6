"""`fbmr index build` (`build_catalogue_index`): every listing of the catalogue embedded once, at
the exported version the index records, and a Triton that is away when the build starts waited
for (the client's retried scorer) rather than ending the build."""

from __future__ import annotations

import json
import threading

import pytest
import stamina.instrumentation

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import Kind
from fbmr.serving.index.catalogue import build_catalogue_index, read_catalogue
from fbmr.serving.index.faiss_index import FaissIndex
from fbmr.serving.triton.ports import TritonPorts
from fbmr.serving.triton.server import LocalTriton
from tests.helpers import free_ports

pytestmark = pytest.mark.integration  # indexes through a real tritonserver


def test_every_listing_is_indexed_once_at_the_exported_version(
    demo_index, demo_prepared, cpu_repository
):
    listings = read_catalogue(demo_prepared, ("train", "val"))
    index = FaissIndex(next(demo_index.glob("v[0-9]*")))
    assert index.meta["count"] + index.meta["skipped"] == len(listings)
    assert index.model_version == ModelArtifacts.load(cpu_repository).version
    ids = [row["id"] for row in index.listings]
    assert len(ids) == len(set(ids)) == index.meta["count"]
    assert set(ids) <= {item["product_id"] for item in listings}
    for kind in Kind:
        assert index.indexes[kind].ntotal == len(ids)


def test_a_build_started_before_triton_waits_for_it(demo_prepared, cpu_repository, tmp_path):
    ports = TritonPorts("127.0.0.1", *free_ports(3))
    built: dict = {}

    def build() -> None:
        built["path"] = build_catalogue_index(
            demo_prepared, tmp_path / "index", ports.grpc_url, cpu_repository,
            splits=("val",), kinds=(Kind.text,), progress=False,
        )  # fmt: skip

    # the build's tries that failed, as its retry library reports them
    retried = threading.Semaphore(0)
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*hooks, lambda details: retried.release()])
    try:
        thread = threading.Thread(target=build)
        thread.start()
        for _ in range(2):  # no Triton yet: a try failed, and one after it too
            assert retried.acquire(timeout=60), "the build did not try to reach Triton"
        assert thread.is_alive()  # retrying, not failed
        with LocalTriton(cpu_repository, ports, tmp_path / "triton.log"):
            thread.join(150)
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)
    assert not thread.is_alive()
    meta = json.loads((built["path"] / "meta.json").read_text())
    assert meta["count"] == len(read_catalogue(demo_prepared, ("val",))) - meta["skipped"]
