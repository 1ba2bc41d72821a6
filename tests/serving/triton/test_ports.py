"""Free ports for local servers (`fbmr.serving.triton.ports`)."""

from __future__ import annotations

import socket

from fbmr.serving.triton.ports import PORTS_FROM, _ephemeral_start, free_ports


def test_free_ports_differ_and_lie_below_the_range_outgoing_connections_take():
    """A port handed out by the kernel (`bind(0)`) comes from the ephemeral range, where any
    client socket (a load test opens hundreds) can take it before the server binds it."""
    top = _ephemeral_start()
    assert top - PORTS_FROM >= 1_000, "this machine's ephemeral range leaves no room below it"
    for _ in range(20):
        ports = free_ports(4)
        assert len(set(ports)) == 4
        assert all(PORTS_FROM <= port < top for port in ports), ports
    held = socket.socket()
    held.bind(("127.0.0.1", free_ports(1)[0]))  # a port in use is never handed out
    try:
        assert held.getsockname()[1] not in {p for _ in range(200) for p in free_ports(3)}
    finally:
        held.close()
