"""A real Milvus server for the tests, reachable on 127.0.0.1 only.

The `milvus` wheel (2.3.5, the dev group) bundles the standalone Milvus server: one process with
embedded etcd and local storage, speaking the same gRPC protocol as a Milvus cluster. It cannot
be told to bind one address: its proxy, coordinators and nodes listen on every interface (`*`)
at fixed default ports (19530, 53100, 19531, 21121-21124, 13333, 19529, 9091; etcd on
127.0.0.1:2379-2380). So it runs in a network namespace of its own, where the only interface is
a loopback nobody else shares: nothing outside the namespace can reach those ports, and two test
sessions on one machine never compete for them.

Run as a script (`python -m tests.milvus_server BASE_DIR`), this module is that namespace's
first process: it opens the one socket the tests use, on the host's 127.0.0.1 at a free port,
*before* it leaves the host's network namespace (a socket stays in the namespace it was made
in), then unshares a new one, brings its loopback up, starts the server there and relays each
connection of the listening socket to the server's port inside. It prints `READY <port>` once
the server answers, and stops the server and exits on SIGTERM or when its stdin closes (the
test session that started it ended, however it ended).

`MilvusSandbox` is the test side: it starts the script and waits, bounded, for that line.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MILVUS_PORT = 19530  # the server's own port, inside its namespace
READY = "READY"
# the settings of Milvus's config template shortened, in ms
FASTER = {
    "timeTickInterval": 20,
    "assignmentExpiration": 200,
    "checkInterval": 200,
    "distPullInterval": 100,
}


def _unshare_network() -> None:
    """Leave the host's network namespace for a new, empty one (as root, or through a user
    namespace that maps this user to root in it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) == 0:
        return
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot make a network namespace: {os.strerror(errno)}")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")


def _loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", _ioctl(sock, siocgifflags, request))[1]
        _ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _ioctl(sock: socket.socket, request: int, argument: bytes) -> bytes:
    import fcntl

    return fcntl.ioctl(sock.fileno(), request, argument)


def _die_with_parent() -> None:
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket) -> None:
    """One connection of the host's side, carried to the server inside the namespace."""
    try:
        server = socket.create_connection(("127.0.0.1", MILVUS_PORT), timeout=10)
    except OSError:
        client.close()
        return
    server.settimeout(None)
    back = threading.Thread(target=_pump, args=(server, client), daemon=True)
    back.start()
    _pump(client, server)
    back.join()
    client.close()
    server.close()


def serve(base_dir: Path) -> None:
    """The namespace's first process (see the module's docstring)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))  # on the host, before leaving its namespace
    listener.listen(64)
    _unshare_network()
    _loopback_up()

    import milvus
    from milvus import MilvusServer  # type: ignore[import-untyped]

    # the server dies with this process, however this process ends
    milvus.subprocess.Popen = functools.partial(subprocess.Popen, preexec_fn=_die_with_parent)
    server = MilvusServer()
    server.set_base_dir(str(base_dir))
    server.config.update(proxy_port=MILVUS_PORT)
    # Waits that make the Milvus cases most of the suite's time, shortened (the semantics are
    # the same): a Strong read waits for the proxy's next time tick (200 ms: each lookup,
    # search or delete cost about 0.3 s), a flush for the segment's allocations to expire (2 s),
    # a load for the query coordinator's next check (1 s) and distribution pull (0.5 s).
    for setting, value in FASTER.items():
        text = server.config.template_text
        assert f"{setting}: " in text, f"{setting} not in Milvus's config template"
        server.config.template_text = re.sub(rf"\b{setting}: \d+", f"{setting}: {value}", text)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()  # returns once the server's health check answers
        print(f"{READY} {listener.getsockname()[1]}", flush=True)
        while not stop.is_set():
            ready, _, _ = select.select([listener, sys.stdin], [], [], 0.5)
            if sys.stdin in ready and not sys.stdin.buffer.read1(1):
                break  # whoever started us is gone
            if listener in ready:
                client, _ = listener.accept()
                threading.Thread(target=_relay, args=(client,), daemon=True).start()
    finally:
        server.stop()
        listener.close()


def milvus_unavailable() -> str | None:
    """Why the server cannot run on this machine, or None when it can."""
    import importlib.util
    import platform

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the milvus wheel's server runs isolated on Linux x86_64 only, not {sys.platform}"
    if importlib.util.find_spec("milvus") is None:
        return "the milvus package (the dev group's standalone Milvus server) is not installed"
    probe = subprocess.run(
        [sys.executable, "-c", "from tests.milvus_server import _unshare_network as u; u()"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return (
            "the Milvus server listens on every interface, so it runs only in a network "
            "namespace of its own, and this machine refuses one: "
            + (probe.stderr.strip().splitlines() or ["?"])[-1]
        )
    return None


class MilvusSandbox:
    """The Milvus server of the test session: `serve` in a subprocess, stopped by `stop`."""

    def __init__(self, base_dir: Path, start_timeout_s: float = 180) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = base_dir / "sandbox.log"
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.milvus_server", str(base_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            self.port = self._wait_ready(start_timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout_s: float) -> int:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith(READY):
            raise RuntimeError(
                f"the Milvus server did not start in {timeout_s:.0f} s "
                f"(exit {self.process.poll()}):\n{self.log_path.read_text()[-3000:]}"
            )
        return int(line.split()[1])

    def drop_collections(self) -> None:
        """Drop every collection on the server. A loaded collection costs the server CPU for as
        long as it lives (its time ticks and segment checks: 20 of the suite's collections kept
        0.4 of a core busy with no request), so the tests drop theirs when they are done."""
        from pymilvus import MilvusClient

        client = MilvusClient(self.uri)
        try:
            for name in client.list_collections():
                client.drop_collection(name)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server and its namespace's process (SIGTERM, then SIGKILL after 30 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


@contextlib.contextmanager
def milvus_sandbox(base_dir: Path) -> Iterator[MilvusSandbox]:
    sandbox = MilvusSandbox(base_dir)
    try:
        yield sandbox
    finally:
        sandbox.stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
