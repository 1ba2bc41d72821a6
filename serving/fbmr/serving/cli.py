"""`fbmr serve`, `fbmr index build|compact|reload` and `fbmr model status|pin|unpin`.

Only typer and light modules are imported here: the commands' own imports (uvicorn, FAISS, the
gRPC client) happen when a command runs, so `fbmr --help` answers at once.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import logging.config
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from fbmr.core import contract
from fbmr.core.cli import (
    ApiKeyOption,
    DataOption,
    FacadeUrlOption,
    ProgressOption,
    RepoOption,
    TritonUrlOption,
    fail,
    is_loopback,
)
from fbmr.serving.index.index_type import IndexType

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fbmr.client import Client
    from fbmr.serving.settings import FacadeSettings

Answer = TypeVar("Answer")

index_app = typer.Typer(help="Build or reload the similar-listing index.", no_args_is_help=True)
model_app = typer.Typer(
    help="The model version a running facade serves: status, pin (rollback), unpin.",
    no_args_is_help=True,
)


def _setting(name: str, *flags: str) -> Any:
    """A `fbmr serve` option for a FacadeSettings field: unset by default, so that FBMR_* and
    then the field's own default apply; its help names both."""
    from fbmr.serving.settings import ENV_PREFIX, FacadeSettings

    field = FacadeSettings.model_fields[name]
    default = "none" if field.default is None else field.default
    env = f"{ENV_PREFIX}{name.upper()}"
    # written as typer writes an option's own variable and default ("\[": not rich markup)
    help_text = f"{field.description} \\[env var: {env}] \\[default: {default}]"
    return typer.Option(None, *flags, help=help_text)


def serve(
    triton_url: str = _setting("triton_url"),
    repo: Path = _setting("model_repository", "--repo"),
    index_dir: Path = _setting("index_dir"),
    api_key: str = _setting("api_key"),
    max_in_flight: int = _setting("max_in_flight"),
    host: str = typer.Option(
        contract.LOCALHOST, help="Address to bind; 0.0.0.0 to serve the network."
    ),
    port: int = typer.Option(contract.FACADE_PORT, help="Port to listen on."),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
    with_triton: bool = typer.Option(
        False, help="Also start a local tritonserver on --repo, restarted if it crashes."
    ),
    triton_grpc_port: int = typer.Option(
        contract.TRITON_GRPC_PORT, help="With --with-triton: gRPC port."
    ),
    triton_http_port: int = typer.Option(
        contract.TRITON_HTTP_PORT, help="With --with-triton: HTTP port."
    ),
    triton_metrics_port: int = typer.Option(
        contract.TRITON_METRICS_PORT, help="With --with-triton: metrics port."
    ),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        envvar=f"{contract.ENV_PREFIX}INSECURE",
        help="Serve an address other than loopback without an API key (anyone who reaches "
        "it may call every route, listing writes and pins included); refused otherwise.",
    ),
) -> None:
    """Start the FastAPI facade (uvicorn) against Triton; with --with-triton, Triton too."""
    import secrets

    from pydantic import SecretStr, ValidationError

    from fbmr.serving.settings import FacadeSettings
    from fbmr.serving.triton.ports import TritonPorts
    from fbmr.serving.triton.server import LocalTriton, TritonError
    from fbmr.serving.triton.supervisor import TritonSupervisor

    logging.config.dictConfig(log_config())
    flags: dict[str, Any] = {
        "triton_url": triton_url,
        "model_repository": repo.resolve() if repo else None,
        "index_dir": index_dir.resolve() if index_dir else None,
        "api_key": api_key,
        "max_in_flight": max_in_flight,
    }
    ports = TritonPorts(contract.LOCALHOST, triton_http_port, triton_grpc_port, triton_metrics_port)
    status_dir = None
    if with_triton:
        flags["triton_url"] = ports.grpc_url
        status_dir = tempfile.TemporaryDirectory(prefix="fbmr-triton-")
        flags["triton_status_file"] = Path(status_dir.name) / "supervisor.json"
    try:
        settings = FacadeSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as err:
        raise typer.BadParameter(str(err)) from None
    if with_triton and settings.triton_admin_key is None:
        # The local Triton's repository API (which loads model code) answers only to this facade
        # and its workers (they read the key from the environment), not to local processes that
        # cannot read the process list (Triton takes the key on its command line).
        generated = SecretStr(secrets.token_urlsafe(32))
        settings = settings.model_copy(update={"triton_admin_key": generated})
        log.info(
            "the local Triton's control plane takes a key made for this run (%s unset)",
            contract.TRITON_ADMIN_KEY_ENV,
        )
    if workers > 1 and (lite := _milvus_lite_in_use(settings.index_dir)):
        fail(
            f"the index in use is in a milvus-lite file ({lite}), which opens in one process "
            "only: serve it with --workers 1, or build the index into a Milvus server "
            "(fbmr index build --milvus-uri http://HOST:19530)"
        )
    if settings.api_key is None and not is_loopback(host) and not insecure:
        fail(
            f"refusing to serve {host} without an API key: set FBMR_API_KEY (and FBMR_WRITE_KEY, "
            "FBMR_ADMIN_KEY for listing writes and administration), or pass --insecure"
        )
    triton = None
    if with_triton:
        admin_key = settings.triton_admin_key
        local = LocalTriton(
            settings.model_repository,
            ports,
            admin_key=admin_key.get_secret_value() if admin_key else None,
        )
        try:
            triton = TritonSupervisor(local, settings.triton_status_file).start()
        except TritonError as err:
            fail(str(err))
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turned into SystemExit here,
    # it unwinds through `finally`, so the local Triton is stopped too.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    try:
        _run_uvicorn(settings, host, port, workers)
    finally:
        if triton:
            triton.stop()
        if status_dir:
            status_dir.cleanup()


def _milvus_lite_in_use(index_dir: Path | None) -> str | None:
    """The milvus-lite file the index directory's current version lives in, if it does (a
    Milvus server's URL, FAISS files or no index: None)."""
    from fbmr.serving.index.live_index import is_milvus_lite, read_meta
    from fbmr.serving.index.store import current_version

    if index_dir is None or (current := current_version(index_dir)) is None:
        return None
    try:
        meta = read_meta(index_dir / current)
    except (OSError, ValueError):
        return None  # the facade says what is wrong with it when it loads it
    uri = meta.get("milvus_uri")
    return uri if isinstance(uri, str) and is_milvus_lite(uri) else None


def _run_uvicorn(settings: FacadeSettings, host: str, port: int, workers: int) -> None:
    import os

    import uvicorn

    from fbmr.serving.http.main import create_app

    if workers == 1:
        uvicorn.run(
            create_app(settings), host=host, port=port, access_log=False, log_config=log_config()
        )
        return
    # Each worker process builds its own app: the settings reach them as the FBMR_* variables
    # they read back into the same object, and their metrics are summed through files in one
    # folder (prometheus-client's multiprocess mode).
    os.environ.update(settings.to_env())
    with tempfile.TemporaryDirectory(prefix="fbmr-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            "fbmr.serving.http.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=log_config(),
        )


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the facade's: readable lines for its own messages, and the access
    log (one JSON object a request: its id, status, latency, the model and index versions that
    answered, the worker) on standard output. Handed to uvicorn, which applies it in every
    worker process."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["fbmr"] = {"format": "%(levelname)s %(name)s: %(message)s"}
    config["formatters"]["json_lines"] = {"format": "%(message)s"}
    config["handlers"]["fbmr"] = {
        "class": "logging.StreamHandler", "formatter": "fbmr", "stream": "ext://sys.stderr"
    }  # fmt: skip
    config["handlers"]["fbmr_access"] = {
        "class": "logging.StreamHandler", "formatter": "json_lines", "stream": "ext://sys.stdout"
    }  # fmt: skip
    config["loggers"]["fbmr"] = {"handlers": ["fbmr"], "level": "INFO", "propagate": False}
    config["loggers"]["fbmr.access"] = {
        "handlers": ["fbmr_access"], "level": "INFO", "propagate": False
    }  # fmt: skip
    return config


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# the token of the Milvus cluster an index lives in; sent only to the `--milvus-uri` named
MilvusTokenOption = Annotated[
    str | None,
    typer.Option(
        envvar=f"{contract.ENV_PREFIX}MILVUS_TOKEN",
        help="The Milvus cluster's token, where it needs one.",
    ),
]


@index_app.command()
def build(
    data: DataOption,
    out: Path = typer.Option(..., "--out", help="Index directory; a new version is added."),
    triton_url: TritonUrlOption = contract.DEFAULT_TRITON_URL,
    repo: RepoOption = contract.DEFAULT_MODEL_REPOSITORY,
    index_type: IndexType = typer.Option(
        IndexType.auto,
        "--type",
        help="auto (exact up to 100k listings, then hnsw, or ivf with a GPU), exact, ivf, hnsw.",
    ),
    splits: str = typer.Option(None, help="Only these splits, comma-separated (default: all)."),
    kinds: list[contract.Kind] = typer.Option(
        list(contract.Kind),
        "--kind",
        help="Embeddings to index (repeat the option); default all three.",
    ),
    milvus_uri: str = typer.Option(
        None,
        help="Build the version in this Milvus instead of FAISS files: a cluster's URL "
        "(http, port 19530 by default), or a milvus-lite file, relative to --out. The facade "
        "reads it from the version.",
    ),
    milvus_token: MilvusTokenOption = None,
    keep_versions: int = typer.Option(
        3,
        min=2,
        help="Versions kept after the build, the new one included (older ones are removed, "
        "with their Milvus collections; the one in use never). At least 2: workers search the "
        "previous version until they next look for a new one.",
    ),
    progress: ProgressOption = True,
) -> None:
    """Embed a prepared dataset's listings through the running Triton and save the index's next
    version."""
    try:
        from fbmr.client.errors import Unavailable
        from fbmr.serving.index.catalogue import build_catalogue_index
    except ImportError:  # a facade-only install: the client is an extra
        _needs_client("index build")

    chosen = tuple(s.strip() for s in splits.split(",")) if splits else None
    try:
        path = build_catalogue_index(
            data, out, triton_url, repo, index_type, chosen, tuple(kinds), progress, milvus_uri,
            milvus_token, keep_versions,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, Unavailable) as err:
        fail(f"index not built: {err}")
    meta = json.loads((path / "meta.json").read_text())
    typer.echo(f"{path}: {meta['count']} listings ({meta['skipped']} skipped), {meta['type']}")


@index_app.command()
def compact(
    index_dir: Path = typer.Option(..., "--index-dir", help="The index directory to compact."),
    milvus_uri: str = typer.Option(
        None,
        envvar=f"{contract.ENV_PREFIX}MILVUS_URI",
        help="The Milvus the token is for (as given to `fbmr index build`); old collections "
        "are dropped there only.",
    ),
    milvus_token: MilvusTokenOption = None,
    keep_versions: int = typer.Option(
        3, min=2, help="Versions kept afterwards, the new one included (as `index build`)."
    ),
) -> None:
    """Cut the update log down to each listing's last record and fold it into a new index
    version, embedding nothing again (safe to stop at any point; the facade keeps serving)."""
    from fbmr.serving.index.compaction import compact as compact_index

    if not index_dir.is_dir():
        fail(f"no index directory {index_dir}")
    done = compact_index(index_dir, keep_versions, milvus_uri, milvus_token)
    typer.echo(json.dumps(dataclasses.asdict(done)))


@index_app.command()
def reload(
    url: FacadeUrlOption = contract.DEFAULT_FACADE_URL, api_key: ApiKeyOption = None
) -> None:
    """Ask a running facade to load the index's current version now (through fbmr.client)."""
    result = _ask_facade("index reload", url, api_key, lambda client: client.reload_index())
    typer.echo(json.dumps({"reloaded": result.reloaded, "version": result.version}))


def _needs_client(command: str) -> NoReturn:
    fail(f"fbmr {command} needs fbmr-client: pip install 'fbmr-serving[client]'")


def _ask_facade(
    command: str, url: str, api_key: str | None, ask: Callable[[Client], Answer]
) -> Answer:
    """`ask` a running facade through fbmr.client (an extra of a facade-only install); its
    refusal ends the command with the user-error exit code."""
    try:
        from fbmr.client import Client, FbmrError
    except ImportError:
        _needs_client(command)
    try:
        with Client(url, api_key=api_key) as client:
            return ask(client)
    except FbmrError as err:
        fail(f"{command}: {err}")


def _model_versions(url: str, api_key: str | None, pin: bool, version: int | None) -> None:
    result = _ask_facade(
        "model",
        url,
        api_key,
        lambda client: client.pin_model_version(version) if pin else client.model_versions(),
    )
    typer.echo(
        json.dumps(
            {
                "in_use": result.in_use,
                "pinned": result.pinned,
                "rollout": result.rollout,
                "refused": result.refused,
            },
            indent=2,
        )
    )


@model_app.command("status")
def model_status(
    url: FacadeUrlOption = contract.DEFAULT_FACADE_URL, api_key: ApiKeyOption = None
) -> None:
    """The version in use, the pin, and the refused versions with their causes."""
    _model_versions(url, api_key, pin=False, version=None)


@model_app.command()
def pin(
    version: int = typer.Argument(..., min=1, help="The exported version to serve."),
    url: FacadeUrlOption = contract.DEFAULT_FACADE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Serve an exported version from now on (a rollback, or a chosen roll forward): loaded and
    checked beside the version in use, which keeps serving if it is refused (exit code 1)."""
    _model_versions(url, api_key, pin=True, version=version)


@model_app.command()
def unpin(url: FacadeUrlOption = contract.DEFAULT_FACADE_URL, api_key: ApiKeyOption = None) -> None:
    """Follow the newest export again."""
    _model_versions(url, api_key, pin=True, version=None)
