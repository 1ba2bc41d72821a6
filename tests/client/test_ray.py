"""The batch scorer on Ray Data: `map_batches` over an actor pool on a local Ray instance, against
the session's real tritonserver, gives the rows the local direct mode gives."""

from __future__ import annotations

import pandas as pd
import pytest

from fbmr.client.score import TritonTarget, score, use_this_environment_for_local_ray
from tests.client.conftest import assert_same_rows

use_this_environment_for_local_ray()  # before Ray is imported, as fbmr score does
ray = pytest.importorskip("ray")


def test_ray_actor_pool_scores_like_the_local_direct_mode(
    demo_seed, triton, cpu_repository, direct_scores, tmp_path
):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
