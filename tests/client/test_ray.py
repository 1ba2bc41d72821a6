"""The batch scorer on Ray Data: `map_batches` over an actor pool on a local Ray instance, against
the session's real tritonserver, gives the rows the local direct mode gives."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from fbmr.client.score import TritonTarget, score, start_ray, use_this_environment_for_local_ray
from tests.client.conftest import assert_same_rows

use_this_environment_for_local_ray()  # before Ray is imported, as fbmr score does
ray = pytest.importorskip("ray")


def test_ray_actor_pool_scores_like_the_local_direct_mode(
    demo_seed, triton, cpu_repository, direct_scores, tmp_path
):
    start_ray(num_cpus=2)  # local, started here so that `score` joins it rather than its own
    try:
        # the same Triton twice: a "fleet" of two URLs, one picked per actor
        target = TritonTarget(
            (triton.ports.grpc_url, triton.ports.grpc_url), cpu_repository, ray_address="local"
        )
        out = tmp_path / "ray.parquet"
        summary = score(
            demo_seed, out, target, batch_size=16, concurrency=2, chunk_rows=100, progress=False
        )
    finally:
        ray.shutdown()
    frame = pd.read_parquet(out)
    assert summary.rows == summary.scored == len(direct_scores)
    assert list(frame["id"]) == list(direct_scores["id"])
    assert_same_rows(frame, direct_scores)


def test_a_local_start_that_times_out_is_tried_once_more(monkeypatch):
    calls: list[str] = []

    def init(address=None, **kwargs):
        calls.append(f"init {address} {sorted(kwargs.items())}")
        if len(calls) == 1:
            raise RuntimeError("Timed out waiting for file .../gcs_server_port")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.delenv("RAY_gcs_server_port_wait_time_s", raising=False)
    start_ray(num_cpus=2)
    options = "[('include_dashboard', False), ('log_to_driver', False), ('num_cpus', 2)]"
    assert calls == [f"init None {options}", "shutdown", f"init None {options}"]
    assert os.environ["RAY_gcs_server_port_wait_time_s"] == "120"  # noqa: SIM112 (Ray spells it so)


def test_joining_a_cluster_is_not_retried(monkeypatch):
    def init(address=None, **kwargs):
        raise RuntimeError("no cluster there")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RuntimeError, match="no cluster"):
        start_ray("ray://127.0.0.1:1")
