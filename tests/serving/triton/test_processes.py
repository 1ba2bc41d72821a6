"""A tritonserver's processes (`fbmr.serving.triton.processes`): the stubs a killed server leaves
are found and reaped, a stop escalates from SIGTERM to SIGKILL, and a zombie is not alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fbmr.serving.triton.processes import (
    SHM_PREFIX,
    STUB_NAME,
    alive,
    orphan_stubs,
    reap_orphan_stubs,
    stop_tritonserver,
)
from tests.helpers import wait_for


def test_stubs_whose_server_is_gone_are_found_and_reaped(tmp_path):
    """A python-backend stub records its server's pid (argv[5]); stubs of a server that died
    without stopping them are killed, and nobody else's."""
    stub = tmp_path / STUB_NAME  # this interpreter under the stub's name
    stub.symlink_to(sys.executable)
    script = tmp_path / "model.py"
    script.write_text("import time\ntime.sleep(120)\n")  # the stimulus: a stub that lives on
    gone = subprocess.Popen(["true"])
    gone.wait()

    def fake_stub(server_pid: int) -> subprocess.Popen:
        shm = f"{SHM_PREFIX}1p2_region"
        return subprocess.Popen([str(stub), str(script), shm, "1", "1", str(server_pid)])

    orphan, adopted = fake_stub(gone.pid), fake_stub(os.getpid())
    try:
        deadline = time.monotonic() + 10
        while orphan.pid not in orphan_stubs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orphan.pid in orphan_stubs() and adopted.pid not in orphan_stubs()
        assert orphan.pid in reap_orphan_stubs()
        assert orphan.wait(10) == -signal.SIGKILL
        assert adopted.poll() is None
    finally:
        for process in (orphan, adopted):
            process.kill()
            process.wait()


@pytest.mark.parametrize(("ignores_sigterm", "code"), [(False, -signal.SIGTERM), (True, -9)])
def test_a_server_is_stopped_with_sigterm_then_killed_if_it_hangs(ignores_sigterm, code):
    handler = "signal.SIG_IGN" if ignores_sigterm else "signal.SIG_DFL"
    # the stimulus: a server that runs until stopped (its sleep is not a wait in this test)
    script = (
        f"import signal, time; signal.signal(signal.SIGTERM, {handler}); "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        started = time.monotonic()
        stop_tritonserver(process, timeout_s=1.0)
        assert process.poll() == code
        assert time.monotonic() - started < 10
    finally:
        process.kill()
        process.wait()


def test_a_server_that_exited_unwaited_for_is_not_alive():
    """`fbmr triton stop` stops a server by its pid and waits until it is gone. A server started
    by a process that lives on (a test, a notebook) is that process's child: once it exits it is
    a zombie until waited for, which has stopped, and the stop must not wait its whole timeout
    for it (30 s by default) then kill it."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{process.pid}/stat")  # the state follows the parenthesised name
        wait_for(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z", 10, "its exit")
        assert not alive(process.pid)
    finally:
        process.wait()
    assert alive(os.getpid())
