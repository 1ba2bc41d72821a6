"""Triton's control plane closed to all but the facade: the server flags that restrict its
administrative protocols to callers sending one header, and the client plugin that sends it.

Triton's repository API loads and unloads models, and a model load can carry model code (the
python backend runs it), so any process that reaches Triton's ports could replace what it
serves. Started with `restricted_flags(key)`, Triton answers those protocols only to requests
carrying the header `TRITON_ADMIN_HEADER: key` (over gRPC, under the prefix
`triton-grpc-protocol-`); the facade's rollout and `fbmr triton status` send it through
`AdminKeyPlugin`. Inference, health, metadata, model configuration and statistics stay open:
they change nothing, and batch scoring reads the configuration to size its batches. The network
policy in `deploy/` keeps other pods from Triton's ports as well.
"""

from __future__ import annotations

from typing import Any

from tritonclient._plugin import InferenceServerClientPlugin

from fbmr.core.contract import TRITON_ADMIN_HEADER, TRITON_RESTRICTED_PROTOCOLS

GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


def restricted_flags(admin_key: str | None) -> list[str]:
    """tritonserver's flags restricting the protocols that change it to `admin_key`'s holders
    (none without a key)."""
    if not admin_key:
        return []
    rule = f"{','.join(TRITON_RESTRICTED_PROTOCOLS)}:{TRITON_ADMIN_HEADER}={admin_key}"
    return [f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}"]


class AdminKeyPlugin(InferenceServerClientPlugin):  # type: ignore[misc]  # untyped base
    """Sends the admin header with every request of the tritonclient it is registered on."""

    def __init__(self, admin_key: str) -> None:
        self._key = admin_key

    def __call__(self, request: Any) -> None:
        # Triton reads a restricted gRPC protocol's header under its own prefix, and the HTTP
        # one as named; a client sends both, so either protocol's client works
        request.headers[GRPC_HEADER_PREFIX + TRITON_ADMIN_HEADER] = self._key
        request.headers[TRITON_ADMIN_HEADER] = self._key


def admin_client(client: Any, admin_key: str | None) -> Any:
    """`client` (a tritonclient), sending the admin header when there is a key; returned."""
    if admin_key:
        client.register_plugin(AdminKeyPlugin(admin_key))
    return client
