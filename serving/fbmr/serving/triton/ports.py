"""Where a local tritonserver listens, and finding free ports for one: `TritonPorts` (its HTTP,
gRPC and metrics ports on one host), `free_ports` for servers started beside others (the tests,
the benchmarks), `is_live` to ask one whether it answers."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import InferenceServerClient, InferenceServerException

from fbmr.core.contract import (
    LOCALHOST,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
)


@dataclass(frozen=True)
class TritonPorts:
    host: str = LOCALHOST
    http: int = TRITON_HTTP_PORT
    grpc: int = TRITON_GRPC_PORT
    metrics: int = TRITON_METRICS_PORT

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics}/metrics"


# Where free_ports draws from: above the registered ports most local services use, below the
# kernel's ephemeral range (Linux's default starts at 32768).
PORTS_FROM = 20_000


def _ephemeral_start() -> int:
    """The first port the kernel hands out to outgoing connections and `bind(0)`."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """Ports free on `host` right now, for a local Triton and facade beside others (the tests
    and benchmarks start them), held open together so that they differ.

    Drawn at random from below the kernel's ephemeral range, not by `bind(0)`: a port from that
    range can be taken by any outgoing connection (a load test opens hundreds) between this
    choice and the server's own bind, and `bind(0)` hands out the same port to two callers that
    close it in turn. Here only another caller of free_ports can pick the same port, 1 in about
    12,000 a draw. Where the ephemeral range leaves no room below it, the kernel chooses."""
    top = _ephemeral_start()
    draw = random.SystemRandom()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count * 50):
            if len(sockets) == count:
                break
            port = draw.randrange(PORTS_FROM, top) if top - PORTS_FROM >= 1_000 else 0
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:  # in use (or lingering after use): draw again
                s.close()
                continue
            sockets.append(s)
        if len(sockets) < count:
            raise OSError(f"no {count} free ports on {host} in {PORTS_FROM}-{top - 1}")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def is_live(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the server at `url` answers (its models may still be loading)."""
    try:
        with InferenceServerClient(url) as client:
            return bool(client.is_server_live(client_timeout=timeout_s))
    except InferenceServerException:
        return False
