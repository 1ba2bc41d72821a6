"""The batch scorer on Ray Data: `map_batches` over an actor pool on a local Ray instance, against
the session's real tritonserver, gives the rows the local direct mode gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fbmr.client.batch.ray_session import start_ray
from tests.client.conftest import assert_same_rows

ray = pytest.importorskip("ray")  # no Ray starts in this process: `fbmr score` starts its own


@pytest.mark.integration  # a local Ray instance, in a subprocess
@pytest.mark.timeout(900)  # the subprocess's own limit is 600 s
def test_ray_actor_pool_scores_like_the_local_direct_mode(
    demo_seed, triton, cpu_repository, direct_scores, tmp_path
):
    # `fbmr score --ray local` in a process of its own, as a user runs it: a local Ray started
    # in this test process would fork Ray's servers from a process that holds gRPC client
    # threads (the session's Triton clients), which is not fork-safe (twice a server so forked
    # never came up in time). The same Triton twice: a "fleet" of two URLs, one per actor.
    out = tmp_path / "ray.parquet"
    fleet = f"{triton.ports.grpc_url},{triton.ports.grpc_url}"
    command = [str(Path(sys.executable).with_name("fbmr")), "score", str(demo_seed),
               "--out", str(out), "--triton-url", fleet, "--repo", str(cpu_repository),
               "--ray", "local", "--batch-size", "16", "--concurrency", "2",
               "--chunk-rows", "100", "--summary-json", str(tmp_path / "summary.json"),
               "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    frame = pd.read_parquet(out)
    assert summary["rows"] == summary["scored"] == len(direct_scores)
    assert list(frame["id"]) == list(direct_scores["id"])
    assert_same_rows(frame, direct_scores)


def test_a_local_start_that_times_out_is_tried_once_more(monkeypatch):
    calls: list[str] = []

    def init(address=None, **kwargs):
        calls.append(f"init {address} {sorted(kwargs.items())}")
        if len(calls) == 1:
            raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.delenv("RAY_gcs_server_port_wait_time_s", raising=False)
    start_ray(num_cpus=2)
    options = "[('include_dashboard', False), ('log_to_driver', False), ('num_cpus', 2)]"
    assert calls == [f"init local {options}", "shutdown", f"init local {options}"]
    assert os.environ["RAY_gcs_server_port_wait_time_s"] == "120"  # noqa: SIM112 (Ray spells it so)


def test_joining_a_cluster_is_not_retried(monkeypatch):
    def init(address=None, **kwargs):
        raise RuntimeError("no cluster there")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RuntimeError, match="no cluster"):
        start_ray("ray://127.0.0.1:1")
