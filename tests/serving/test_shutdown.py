"""`fbmr serve` stopped with SIGTERM under load, as an orchestrator stops it: the requests in
flight are answered, new connections are refused, and nothing is half-answered."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_ports, wait_for, wait_until_ready

# how long a connection may wait in the listening socket's queue, unread, on a loaded machine
QUEUED_AT_MOST_S = 1.0

pytestmark = pytest.mark.integration  # `fbmr serve` in a subprocess


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
        wait_until_ready(url, process, log, timeout_s=60)

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

        # One request is certainly in flight at SIGTERM: its body is still being sent. (The
        # hammering requests alone may all be between two requests at that moment on a loaded
        # machine.)
        body_started, signalled = threading.Event(), threading.Event()
        in_flight: list[tuple[float, float, str]] = []

        def slow_body() -> Iterator[bytes]:
            yield b'{"text": "an oak'
            body_started.set()  # asked for more: the headers and the first part are out
            signalled.wait(30)
            # the stimulus, not a wait for a condition: the rest of the body arrives a moment
            # after SIGTERM, so the request is still being received while the server stops
            time.sleep(0.3)
            yield b' chest"}'

        def slow_request() -> None:
            sent = time.monotonic()
            response = httpx.post(
                f"{url}/v1/predict/text", content=slow_body(), timeout=30,
                headers={"content-type": "application/json"},
            )  # fmt: skip
            in_flight.append((sent, time.monotonic(), str(response.status_code)))

        with ThreadPoolExecutor(5) as pool:
            for _ in range(4):
                pool.submit(hammer)
            slow = pool.submit(slow_request)
            try:
                # a request answered that was sent well before the signal (see `before` below)
                wait_for(
                    lambda: any(
                        o == "200" and sent < time.monotonic() - QUEUED_AT_MOST_S
                        for sent, _, o in list(outcomes)
                    ),
                    60,
                    "a request answered before SIGTERM",
                )
                assert body_started.wait(30)
                terminated = time.monotonic()
                process.send_signal(signal.SIGTERM)
                signalled.set()
                process.wait(30)
                wait_for(
                    lambda: any(
                        sent > terminated and o == "ConnectError" for sent, _, o in list(outcomes)
                    ),
                    30,
                    "a connection refused after SIGTERM",
                )
            finally:
                stop.set()
                signalled.set()
            slow.result(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode in (0, 128 + signal.SIGTERM), log.read_text()
    # answered in full, or not connected at all: never a connection dropped mid-answer. A
    # request sent just before or after SIGTERM may also find its connection reset unanswered:
    # the kernel had queued it for a listening socket the server was closing, and the server
    # never read it. On a loaded machine a request can wait a while in that queue (seen:
    # sent before SIGTERM, reset), but not a second: one sent earlier was taken.
    before = {o for sent, _, o in outcomes if sent < terminated - QUEUED_AT_MOST_S}
    after = {o for sent, _, o in outcomes if sent >= terminated - QUEUED_AT_MOST_S}
    assert "200" in before and before <= {"200", "ConnectError"}, outcomes
    assert after <= {"200", "ConnectError", "RemoteProtocolError"}, outcomes
    # requests the server had taken before SIGTERM were answered after it
    assert [o for sent, done, o in in_flight if sent < terminated < done] == ["200"], in_flight
    # and once it stopped listening, new connections were refused
    assert any(sent > terminated and o == "ConnectError" for sent, _, o in outcomes)
