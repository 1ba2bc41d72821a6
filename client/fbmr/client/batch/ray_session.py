"""Starting or joining Ray for `fbmr score --ray`: the environment switches a local instance
needs on a small, loaded machine, read by Ray when it is imported, so set here before that."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def use_this_environment_for_local_ray() -> None:
    """Have a local Ray instance's workers run in this Python environment. Ray otherwise notices
    a driver started by `uv run` and gives each worker a runtime environment that runs `uv run`
    again in an uploaded copy of the working directory: a new environment built per worker, which
    outlasts Ray's worker start-up timeout, so the workers never start. Ray reads the switch
    when it is imported: call this first."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"


def _import_ray(address: str | None) -> Any:
    """Ray, imported after the switches a local start (`address` None) needs."""
    if address is None:
        use_this_environment_for_local_ray()
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    import ray

    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local one (None). A local start forks Ray's
    servers from this process and waits for them, 30 s by default; on a loaded 2-core machine a
    server has missed that wait (no GCS port written; no raylet registered), so the GCS wait is
    raised to 120 s unless set, and a local start that still fails is shut down and tried once
    more. Forking from a process that already holds gRPC client threads (Triton's) is not
    fork-safe: start Ray from a fresh process, as `fbmr score --ray local` does (so does the
    test), or join a head started apart (`ray start --head`)."""
    ray = _import_ray(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    # "local": always a new instance; with no address Ray would join the last one `ray start`
    # recorded on this machine, even one long gone
    try:
        ray.init(address=address or "local", **kwargs)
    except Exception:  # Ray raises a bare Exception when the raylet misses its wait
        if address is not None:
            raise
        ray.shutdown()
        ray.init(address="local", **kwargs)


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, started or joined for the block (`address` None or "local": a local instance) unless
    this process already runs it; shut down after the block only if started here."""
    address = None if address in (None, "local") else address
    ray = _import_ray(address)
    started = not ray.is_initialized()
    if started:
        start_ray(address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
