"""`fbmr serve` stopped with SIGTERM under load, as an orchestrator stops it: the requests in
flight are answered, new connections are refused, and nothing is half-answered."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.helpers import free_ports


def test_sigterm_under_load_answers_requests_in_flight_and_refuses_new_ones(
    triton, cpu_repository, tmp_path
):
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [
        str(Path(sys.executable).with_name("fbmr")), "serve", "--port", str(port),
        "--triton-url", triton.ports.grpc_url, "--repo", str(cpu_repository),
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)

        outcomes: list[tuple[float, float, str]] = []  # (sent, answered, outcome)
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    # a new connection per request: a refused connection is then visible as such
                    response = httpx.post(
                        f"{url}/v1/predict/text", json={"text": "an oak chest"}, timeout=30
                    )
                    outcome = str(response.status_code)
                except httpx.TransportError as err:
                    outcome = type(err).__name__
                outcomes.append((sent, time.monotonic(), outcome))

        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(hammer)
            try:
                time.sleep(2)
                terminated = time.monotonic()
                process.send_signal(signal.SIGTERM)
                process.wait(30)
                time.sleep(0.5)
            finally:
                stop.set()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode in (0, 128 + signal.SIGTERM), log.read_text()
    # answered in full, or not connected at all: never a connection dropped mid-answer
    assert {o for _, _, o in outcomes} <= {"200", "ConnectError"}, outcomes
    # requests the server had taken before SIGTERM were answered after it
    assert any(sent < terminated < done and o == "200" for sent, done, o in outcomes)
    # and once it stopped listening, new connections were refused
    assert any(sent > terminated and o == "ConnectError" for sent, _, o in outcomes)
