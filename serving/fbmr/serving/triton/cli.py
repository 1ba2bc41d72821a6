"""`fbmr triton start|stop|status`: a local tritonserver in the background.

The server is identified by its gRPC port: `start` records its process id and ports in a small
state file, which `status` and `stop` read back. The gRPC client is imported when a command runs,
not when the command is registered, so `fbmr --help` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fbmr.core.cli import RepoOption, fail, is_loopback
from fbmr.core.contract import (
    DEFAULT_MODEL_REPOSITORY,
    ENV_PREFIX,
    LOCALHOST,
    TRITON_ADMIN_HEADER,
    TRITON_ADMIN_KEY_ENV,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
)

if TYPE_CHECKING:
    from fbmr.serving.triton.server import LocalTriton

app = typer.Typer(help="Run a local tritonserver on a model repository.", no_args_is_help=True)

HOST_HELP = "Address to bind and call; 127.0.0.1 keeps it off the network."
AdminKeyOption = Annotated[
    str | None,
    typer.Option(
        envvar=TRITON_ADMIN_KEY_ENV,
        help="Restrict Triton's repository, shared-memory, trace and logging protocols to "
        f"callers sending the header {TRITON_ADMIN_HEADER} with this key (the facade's "
        "FBMR_TRITON_ADMIN_KEY); give it from the environment, not the command line.",
        show_default=False,
    ),
]


def _state_path(grpc_port: int) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "fbmr" / f"tritonserver-{grpc_port}.json"


@app.command()
def start(
    repo: RepoOption = DEFAULT_MODEL_REPOSITORY,
    host: str = typer.Option(LOCALHOST, help=HOST_HELP),
    http_port: int = typer.Option(TRITON_HTTP_PORT, help="Triton's HTTP port."),
    grpc_port: int = typer.Option(TRITON_GRPC_PORT, help="Triton's gRPC port (the facade's)."),
    metrics_port: int = typer.Option(TRITON_METRICS_PORT, help="Prometheus metrics at /metrics."),
    log: Path = typer.Option(None, help="Triton's log file \\[default: beside the repository]."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for a checked version."),
    foreground: bool = typer.Option(
        False, help="Stay in the foreground and start tritonserver again if it crashes."
    ),
    admin_key: AdminKeyOption = None,
    insecure: bool = typer.Option(
        False,
        "--insecure",
        envvar=f"{ENV_PREFIX}INSECURE",
        help="Bind an address other than loopback without an admin key (anyone who reaches it "
        "may load model code through the repository API); refused otherwise.",
    ),
) -> None:
    """Start tritonserver in the background and wait until the version to serve is loaded and
    checked (the newest export that loads and answers, or the pinned one)."""
    if not admin_key and not is_loopback(host) and not insecure:
        fail(
            f"refusing to start tritonserver on {host} without an admin key: set "
            f"{TRITON_ADMIN_KEY_ENV}, or pass --insecure"
        )
    from fbmr.core.fileio import atomic_write_json
    from fbmr.serving.triton.ports import TritonPorts
    from fbmr.serving.triton.processes import alive
    from fbmr.serving.triton.server import LocalTriton, TritonError

    if foreground:
        ports = TritonPorts(host, http_port, grpc_port, metrics_port)
        _supervise(LocalTriton(repo, ports, log, admin_key=admin_key), timeout)
        return

    state = _state_path(grpc_port)
    if state.is_file() and alive(json.loads(state.read_text())["pid"]):
        fail(f"a tritonserver started by fbmr already uses port {grpc_port}")
    ports = TritonPorts(host, http_port, grpc_port, metrics_port)
    try:
        server = LocalTriton(repo, ports, log, admin_key=admin_key).start(timeout, detach=True)
    except TritonError as err:
        fail(str(err))
    state.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": server.pid,
        "repository": str(repo.resolve()),
        "grpc": ports.grpc_url,
        "http": f"http://{host}:{http_port}",
        "metrics": ports.metrics_url,
        "log": str(server.log_path.resolve()),
    }
    atomic_write_json(state, record)
    typer.echo(json.dumps(record, indent=2))


@app.command()
def status(
    host: str = typer.Option(LOCALHOST, help=HOST_HELP),
    grpc_port: int = typer.Option(TRITON_GRPC_PORT, help="The tritonserver's gRPC port."),
    admin_key: AdminKeyOption = None,
) -> None:
    """Whether a tritonserver answers on the port and serves every ensemble at one exported
    version, and which (exit code 1 if not)."""
    from tritonclient.grpc import InferenceServerClient, InferenceServerException

    from fbmr.serving.triton.admin import admin_client
    from fbmr.serving.triton.versions import served_version

    try:
        with admin_client(InferenceServerClient(f"{host}:{grpc_port}"), admin_key) as client:
            serving = served_version(client)
    except InferenceServerException:
        serving = None
    state = _state_path(grpc_port)
    record = json.loads(state.read_text()) if state.is_file() else {}
    ready = serving is not None
    typer.echo(json.dumps({"ready": ready, "model_version": serving, **record}, indent=2))
    if not ready:
        raise typer.Exit(1)


@app.command()
def stop(
    grpc_port: int = typer.Option(
        TRITON_GRPC_PORT, help="The gRPC port of the tritonserver `fbmr triton start` started."
    ),
    timeout: float = typer.Option(30.0, help="Seconds to wait before killing it."),
) -> None:
    """Stop the tritonserver that `fbmr triton start` started on this port."""
    from fbmr.serving.triton.processes import stop_tritonserver

    state = _state_path(grpc_port)
    if not state.is_file():
        typer.echo(f"no tritonserver started by fbmr on port {grpc_port}")
        return
    pid = json.loads(state.read_text())["pid"]
    stop_tritonserver(pid, timeout)
    state.unlink()
    typer.echo(f"stopped tritonserver (pid {pid})")


def _supervise(triton: LocalTriton, timeout: float) -> None:
    """Run `triton` under a TritonSupervisor until SIGTERM or SIGINT."""
    import logging
    import threading

    from fbmr.serving.triton.server import TritonError
    from fbmr.serving.triton.supervisor import TritonSupervisor

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        supervisor = TritonSupervisor(triton, start_timeout_s=timeout).start()
    except TritonError as err:
        fail(str(err))
    typer.echo(f"tritonserver on {triton.ports.grpc_url} (pid {triton.pid}); Ctrl-C stops it")
    try:
        while not stop.wait(1.0):
            if supervisor.status.state == "gave_up":
                raise typer.Exit(1)
    finally:
        supervisor.stop()
