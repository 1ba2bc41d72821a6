"""A tritonserver's processes as the operating system sees them: whether one runs, stopping it
(SIGTERM, then SIGKILL), finding and killing the python-backend stubs a killed server leaves
behind, and starting one so that it dies with its parent. Apart from `LocalTriton`
(`fbmr.serving.triton.server`), since `fbmr triton stop` and the supervisor need them for
servers this process did not start."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
SHM_PREFIX = "fbmr"


def alive(pid: int) -> bool:
    """Whether process `pid` runs. A zombie (exited, not yet waited for by its parent: a server
    `fbmr triton start` left as a child of a long-lived process) has stopped, so it is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # the state is the field after the command name, which is in parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def orphan_stubs() -> list[int]:
    """Python-backend stub processes of our servers whose tritonserver is gone.

    A stub is started as `stub MODEL.py SHM_REGION SHM_SIZE SHM_GROWTH PARENT_PID ...`; a
    tritonserver killed with SIGKILL cannot stop its stubs, which then run on (and may spin)
    with nothing to serve.
    """
    orphans = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) < 6 or not argv[0].endswith(STUB_NAME.encode()):
            continue
        ours = argv[2].startswith(SHM_PREFIX.encode()) and argv[5].isdigit()
        if ours and not alive(int(argv[5])):
            orphans.append(int(proc.name))
    return orphans


def reap_orphan_stubs() -> list[int]:
    """Kill the stubs `orphan_stubs` finds, so that a new server gets the cores to itself."""
    reaped = []
    for pid in orphan_stubs():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            reaped.append(pid)
    return reaped


def stop_tritonserver(server: subprocess.Popen[bytes] | int, timeout_s: float = 30.0) -> None:
    """Stop a tritonserver: SIGTERM (it unloads its models and exits), SIGKILL if it is still
    there after `timeout_s`, then its python-backend stubs, which a killed server cannot stop.
    `server`: a process this one started, or the pid of one started elsewhere."""
    child, pid = (server, server.pid) if isinstance(server, subprocess.Popen) else (None, server)

    def gone() -> bool:  # a child is waited for: its zombie would still look alive
        return child.poll() is not None if child is not None else not alive(pid)

    if gone():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    if gone():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if child is not None:
        child.wait()
    reap_orphan_stubs()


def dying_with_parent(command: list[str]) -> list[str]:
    """`command` run so that Linux SIGTERMs it when its parent exits (an attached server dies
    with the facade or test that started it, even one killed without cleanup).

    util-linux's `setpriv --pdeathsig` sets that before exec. Setting it from Python would need
    a `preexec_fn`, which makes subprocess fork() the whole process: with the gRPC client's
    threads busy (a facade in the same process) that fork can abort the child.
    """
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]
