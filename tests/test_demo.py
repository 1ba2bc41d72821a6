"""The README's demo command, end to end (its set-up step finds everything installed)."""

from __future__ import annotations

import socket

import pytest

from tests.helpers import free_ports, run_script

# the demo starts its own Triton and facade; its own limit is 900 s, the test's is above it
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_demo_runs_end_to_end_and_stops_its_servers(tmp_path):
    http, grpc, metrics, facade = free_ports(4)
    env = {
        "DEMO_DIR": str(tmp_path / "demo"),
        "TRITON_HTTP_PORT": str(http),
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics),
        "FACADE_PORT": str(facade),
    }
    stdout = run_script("scripts/demo.sh", env=env, timeout=900)
    for line in (
        "POST /v1/predict/image",
        "POST /v1/predict/text",
        "POST /v1/predict/combined",
        "combined embedding",
        "POST /v1/similar (k=5, index v0001)",
        "POST /v1/similar (k=3, price_max=20)",
        "a corrupt photo -> 422",
        "== done in",
    ):
        assert line in stdout, stdout[-3000:]
    # the listing posted is the nearest to itself; once sold, it is gone
    (put,) = [line for line in stdout.splitlines() if line.startswith("PUT /v1/listings/")]
    (sold,) = [line for line in stdout.splitlines() if line.startswith("DELETE /v1/listings/")]
    assert "nearest now: ['demo-" in put and "'demo-" not in sold.split("nearest now:")[1]
    for port in (grpc, facade):  # both servers are gone: nothing listens on their ports
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
