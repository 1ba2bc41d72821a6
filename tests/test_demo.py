"""The README's demo command, end to end (its set-up step finds everything installed)."""

from __future__ import annotations

import os
import socket
import subprocess

from tests.conftest import REPO_ROOT
from tests.helpers import free_ports


def test_demo_runs_end_to_end_and_stops_its_servers(tmp_path):
    http, grpc, metrics, facade = free_ports(4)
    env = {
        **os.environ,
        "DEMO_DIR": str(tmp_path / "demo"),
        "TRITON_HTTP_PORT": str(http),
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics),
        "FACADE_PORT": str(facade),
    }
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in (
        "POST /v1/predict/image",
        "POST /v1/predict/text",
        "POST /v1/predict/combined",
        "combined embedding",
        "POST /v1/similar (k=5, index v0001)",
        "a corrupt photo -> 422",
        "== done in",
    ):
        assert line in done.stdout, done.stdout[-3000:]
    for port in (grpc, facade):  # both servers are gone: nothing listens on their ports
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
