"""Retries are told quietly: one INFO line of the client's own per retry, saying what failed, and
from the `fbmr` command nothing but the final error when nothing listens at the address."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from fbmr.client.errors import ServerUnreachable, Unavailable
from fbmr.client.retry import RetryPolicy, retry_call
from tests.helpers import free_ports


def test_each_retry_is_one_info_line_naming_what_failed(caplog):
    failures = [
        Unavailable("model server unavailable", retry_after=0.01),
        ServerUnreachable("reset"),
    ]

    def call() -> str:
        if failures:
            raise failures.pop(0)
        return "answered"

    policy = RetryPolicy(attempts=5, wait_initial_s=0.01, wait_max_s=0.01, wait_jitter_s=0.01)
    with caplog.at_level(logging.DEBUG):
        assert retry_call(call, policy=policy) == "answered"
    ours = [r for r in caplog.records if r.name == "fbmr.client.retry"]
    assert [r.levelno for r in ours] == [logging.INFO, logging.INFO], caplog.text
    assert "503: model server unavailable; trying again in 0." in ours[0].getMessage()
    assert ours[1].getMessage() == "reset; trying again"
    assert all("\n" not in r.getMessage() for r in ours)


def test_a_command_against_an_address_where_nothing_listens_prints_one_line():
    (closed,) = free_ports(1)
    fbmr = str(Path(sys.executable).with_name("fbmr"))
    started = time.monotonic()
    done = subprocess.run(
        [fbmr, "model", "status", "--url", f"http://127.0.0.1:{closed}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1, lines
    assert len(lines) == 1 and "refused the connection" in lines[0], lines
    assert "stamina" not in done.stderr
    # two seconds of refused tries, plus starting Python on a loaded machine (it took 19 s
    # when every retry was waited in full)
    assert took < 8, took


def test_the_library_against_an_address_where_nothing_listens_fails_in_about_two_seconds_quietly():
    """No logging set up, as in a plain script: one error, raised within the 2 s of refused
    tries, and nothing on stderr (stamina's retry records went to the last-resort handler)."""
    (closed,) = free_ports(1)
    script = (
        "import time\n"
        "from fbmr.client import Client, ServerUnreachable\n"
        f"client = Client('http://127.0.0.1:{closed}')\n"
        "began = time.monotonic()\n"
        "try:\n"
        "    client.predict_text('a bike')\n"
        "except ServerUnreachable as err:\n"
        "    print(f'{time.monotonic() - began:.2f}', err.refused)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    took, refused = done.stdout.split()
    assert refused == "True" and 1.5 <= float(took) < 3, done.stdout
    assert done.stderr == "", done.stderr
