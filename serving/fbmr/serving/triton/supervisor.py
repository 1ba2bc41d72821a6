"""Keeps the local tritonserver of `fbmr serve --with-triton` (and `fbmr triton start
--foreground`) running: started again after it exits, with backoff, and given up on after a
bounded number of failed tries in a row, which it then says in the log and in a status file
that the facade's `/readyz` reads.

In the images an orchestrator restarts the Triton container; a local Triton has nobody else.
Meanwhile the facade answers 503 with Retry-After, and serves again as soon as the restarted
Triton has loaded the version in use (the rollout loads it at start).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fbmr.core.cli import count
from fbmr.core.fileio import atomic_write_json
from fbmr.serving.triton.processes import reap_orphan_stubs
from fbmr.serving.triton.server import LocalTriton, TritonError

log = logging.getLogger(__name__)

# Seconds to wait before each try in a row; the last repeats.
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
# A server that ran this long before exiting crashed, rather than failing to start: the count of
# tries in a row starts again.
STABLE_S = 60.0


@dataclass
class SupervisorStatus:
    state: str  # running, restarting, gave_up, stopped
    restarts: int = 0  # starts after the first
    tries: int = 0  # failed tries in a row
    message: str = ""

    def summary(self) -> str:
        text = f"tritonserver {self.state.replace('_', ' ')}"
        if self.restarts:
            text += f" (restarted {count(self.restarts, 'time')})"
        return f"{text}: {self.message}" if self.message else text


def read_status(path: Path) -> SupervisorStatus | None:
    """The status a supervisor last wrote to `path`; None when there is none (yet)."""
    import json

    try:
        return SupervisorStatus(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class TritonSupervisor:
    """A LocalTriton watched from a thread; `stop` ends both. A context manager."""

    def __init__(
        self,
        triton: LocalTriton,
        status_file: Path | None = None,
        max_tries: int = 5,
        start_timeout_s: float = 180.0,
    ) -> None:
        self.triton = triton
        self.status_file = status_file
        self.max_tries = max_tries
        self.start_timeout_s = start_timeout_s
        self.status = SupervisorStatus("stopped")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TritonSupervisor:
        """Start Triton (raises TritonError when the first start fails) and watch it."""
        self.triton.start(self.start_timeout_s)
        self._report(SupervisorStatus("running"))
        self._thread = threading.Thread(target=self._watch, name="triton-supervisor", daemon=True)
        self._thread.start()
        return self

    def _report(self, status: SupervisorStatus) -> None:
        self.status = status
        if self.status_file is not None:
            atomic_write_json(self.status_file, asdict(status))

    def _watch(self) -> None:
        restarts, tries = 0, 0
        while not self._stopping.is_set():
            process = self.triton.process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_S:
                tries = 0
            reap_orphan_stubs()  # a killed server cannot stop its python-backend stubs
            cause = f"exited with code {code}"
            log.error("tritonserver %s; starting it again", cause)
            while True:
                if tries >= self.max_tries:
                    message = f"gave up after {tries} tries in a row; last: {cause}"
                    log.error("tritonserver %s", message)
                    self._report(SupervisorStatus("gave_up", restarts, tries, message))
                    return
                wait = BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]
                tries += 1
                message = f"try {tries} of {self.max_tries} in {wait:g} s after it {cause}"
                self._report(SupervisorStatus("restarting", restarts, tries, message))
                if self._stopping.wait(wait):
                    return
                try:
                    self.triton.start(self.start_timeout_s)
                except TritonError as err:
                    cause = str(err).splitlines()[0]
                    log.error("tritonserver not started again: %s", cause)
                    continue
                if self._stopping.is_set():  # stopped while it was starting
                    self.triton.stop()
                    return
                restarts += 1
                log.info("tritonserver running again (restart %d)", restarts)
                self._report(SupervisorStatus("running", restarts, tries))
                break

    def stop(self) -> None:
        self._stopping.set()
        self.triton.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._report(SupervisorStatus("stopped", self.status.restarts))

    def __enter__(self) -> TritonSupervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
