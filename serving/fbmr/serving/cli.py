"""`fbmr serve` and `fbmr index build|reload`."""

from __future__ import annotations

import json
import logging
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import typer

from fbmr.serving.index import IndexType
from fbmr.serving.inference import Kind

index_app = typer.Typer(help="Build or reload the similar-listing index.", no_args_is_help=True)


def serve(
    triton_url: str = typer.Option(
        "127.0.0.1:8001", envvar="FBMR_TRITON_URL", help="Triton gRPC host:port."
    ),
    repo: Path = typer.Option(
        Path("model_repository"),
        envvar="FBMR_MODEL_REPOSITORY",
        help="The model repository Triton serves (the facade reads its artifacts).",
    ),
    index_dir: Path = typer.Option(
        None, envvar="FBMR_INDEX_DIR", help="Similar-listing index (fbmr index build)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 to serve the network."),
    port: int = typer.Option(8080),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
    api_key: str = typer.Option(None, envvar="FBMR_API_KEY", help="Bearer token to require."),
    with_triton: bool = typer.Option(False, help="Also start a local tritonserver on --repo."),
    triton_grpc_port: int = typer.Option(8001, help="With --with-triton: its gRPC port."),
    triton_http_port: int = typer.Option(8000, help="With --with-triton: its HTTP port."),
    triton_metrics_port: int = typer.Option(8002, help="With --with-triton: its metrics port."),
) -> None:
    """Start the FastAPI facade (uvicorn) against Triton; with --with-triton, Triton too."""
    import uvicorn

    from fbmr.serving.triton_server import LocalTriton, TritonError, TritonPorts

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    triton = None
    if with_triton:
        ports = TritonPorts("127.0.0.1", triton_http_port, triton_grpc_port, triton_metrics_port)
        try:
            triton = LocalTriton(repo, ports).start()
        except TritonError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
        triton_url = ports.grpc_url
    # Settings travel as FBMR_* variables so that every uvicorn worker process reads the same.
    os.environ.update({"FBMR_TRITON_URL": triton_url, "FBMR_MODEL_REPOSITORY": str(repo.resolve())})
    if index_dir:
        os.environ["FBMR_INDEX_DIR"] = str(index_dir.resolve())
    if api_key:
        os.environ["FBMR_API_KEY"] = api_key
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turned into SystemExit here,
    # it unwinds through `finally`, so the local Triton is stopped too.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    try:
        uvicorn.run(
            "fbmr.serving.app:create_app", factory=True, host=host, port=port, workers=workers
        )
    finally:
        if triton:
            triton.stop()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@index_app.command()
def build(
    catalogue: Path = typer.Argument(..., help="Prepared dataset (fbmr data prepare) to index."),
    out: Path = typer.Option(..., "--out", help="Index directory; a new version is added."),
    triton_url: str = typer.Option("127.0.0.1:8001", help="Triton gRPC host:port."),
    repo: Path = typer.Option(Path("model_repository"), help="The model repository Triton serves."),
    index_type: IndexType = typer.Option(IndexType.exact, "--type", help="exact, ivf or hnsw."),
    splits: str = typer.Option(None, help="Only these splits, comma-separated (default: all)."),
    kinds: list[Kind] = typer.Option(
        list(Kind), "--kind", help="Embeddings to index (repeat the option); default all three."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Embed a catalogue through the running Triton and save the index's next version."""
    from fbmr.serving.catalogue import build_index
    from fbmr.serving.inference import TritonUnavailable

    chosen = tuple(s.strip() for s in splits.split(",")) if splits else None
    try:
        path = build_index(
            catalogue, out, triton_url, repo, index_type, chosen, tuple(kinds), progress
        )
    except (FileNotFoundError, ValueError, TritonUnavailable) as err:
        typer.echo(f"index not built: {err}", err=True)
        raise typer.Exit(1) from None
    meta = json.loads((path / "meta.json").read_text())
    typer.echo(f"{path}: {meta['count']} listings ({meta['skipped']} skipped), {meta['type']}")


@index_app.command()
def reload(
    url: str = typer.Option("http://127.0.0.1:8080", help="The facade's base URL."),
    api_key: str = typer.Option(None, envvar="FBMR_API_KEY", help="Its bearer token."),
) -> None:
    """Ask a running facade to load the index's current version now."""
    request = urllib.request.Request(f"{url}/v1/admin/reload-index", method="POST")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            typer.echo(response.read().decode())
    except urllib.error.HTTPError as err:
        typer.echo(f"{err.code}: {err.read().decode()}", err=True)
        raise typer.Exit(1) from None
