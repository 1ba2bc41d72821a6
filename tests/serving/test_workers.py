"""`fbmr serve --workers 2`, as the facade image runs it: one truth across the workers. `/metrics`
from either worker counts every worker's requests, each worker picks up a new index by itself,
and the access log is one JSON object a request, with the id the caller sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fbmr.serving.index.catalogue import build_catalogue_index
from tests.helpers import free_ports, wait_until_ready

pytestmark = pytest.mark.integration  # `fbmr serve` with two workers in a subprocess

BATCH = 20


def _access_log(log: Path) -> list[dict]:
    return [json.loads(row) for row in log.read_text().splitlines() if row.startswith("{")]


def test_two_workers_share_metrics_and_each_picks_up_a_new_index(
    triton, cpu_repository, demo_prepared, tmp_path
):
    index_dir = tmp_path / "index"
    build_catalogue_index(demo_prepared, index_dir, triton.ports.grpc_url, cpu_repository,
                splits=("train",), progress=False)  # fmt: skip
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {**os.environ, "FBMR_INDEX_POLL_S": "0.5"}
    command = [
        str(Path(sys.executable).with_name("fbmr")), "serve", "--workers", "2", "--port", str(port),
        "--triton-url", triton.ports.grpc_url, "--repo", str(cpu_repository),
        "--index-dir", str(index_dir),
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_ready(url, process, log)

        def ask(i: int) -> None:
            # a new connection each time, so that the kernel can hand it to either worker
            response = httpx.post(
                f"{url}/v1/predict/text",
                json={"text": "a wooden dining table"},
                headers={"X-Request-ID": f"req-{i}"},
            )
            assert response.status_code == 200, response.text
            assert response.headers["X-Request-ID"] == f"req-{i}"

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # concurrent batches until both workers have answered some (the kernel need not
            # share connections evenly), so that the count below sums two processes
            while sent < 10 * BATCH:
                list(pool.map(ask, range(sent, sent + BATCH)))
                sent += BATCH
                pids = {a["pid"] for a in _access_log(log) if a["path"] == "/v1/predict/text"}
                if len(pids) == 2:
                    break
        assert len(pids) == 2
        metrics = httpx.get(f"{url}/metrics").text

        def values(line: str) -> list[float]:
            return [float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line)]

        assert values('fbmr_requests_total{endpoint="/v1/predict/text",status="200"}') == [sent]
        # the latency histogram sums both workers too, and the version gauge is one series
        # (the highest of the live workers'), not one per worker
        latency = 'fbmr_request_seconds_{}{{endpoint="/v1/predict/text"{}}}'
        assert values(latency.format("count", "")) == [sent], metrics
        assert values(latency.format("bucket", ',le="+Inf"')) == [sent], metrics
        assert values("fbmr_model_version ") == [1.0], metrics

        build_catalogue_index(demo_prepared, index_dir, triton.ports.grpc_url, cpu_repository,
                    progress=False)  # fmt: skip
        deadline, seen = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            seen = [
                httpx.post(f"{url}/v1/similar", data={"text": "a sofa", "k": "2"}).json()[
                    "index_version"
                ]
                for _ in range(10)
            ]
            if set(seen) == {"v0002"}:
                break
            time.sleep(0.5)
        assert set(seen) == {"v0002"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)

    access = _access_log(log)
    answered = [a for a in access if a["path"] == "/v1/predict/text"]
    assert sorted(a["request_id"] for a in answered) == sorted(f"req-{i}" for i in range(sent))
    assert all(a["status"] == 200 and a["model_version"] == 1 for a in answered)
    similar = [a for a in access if a["path"] == "/v1/similar"]
    assert similar and {a["index_version"] for a in similar} <= {"v0001", "v0002"}
