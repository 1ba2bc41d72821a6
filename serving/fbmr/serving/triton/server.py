"""A local `tritonserver` process: find the binary, start it on a model repository, load the
version to serve (`fbmr.serving.triton.rollout`), stop it; `TritonSupervisor` restarts it after
a crash. Its ports are `fbmr.serving.triton.ports`; its processes as the system sees them
(alive, stopped, stubs left behind) `fbmr.serving.triton.processes`.

In production Triton runs in the NVIDIA container and the facade only talks to it. On a machine
without Docker (development, CI) the `nvidia-pytriton` wheel ships a `tritonserver` binary with
the python backend; its stub must sit beside the backend library, built for the running Python,
so the backend directory is assembled in a cache folder rather than edited inside the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import InferenceServerClient, InferenceServerException

from fbmr.core.contract import ENV_PREFIX
from fbmr.serving.triton.admin import admin_client, restricted_flags
from fbmr.serving.triton.ports import TritonPorts, is_live
from fbmr.serving.triton.processes import (
    SHM_PREFIX,
    dying_with_parent,
    reap_orphan_stubs,
    stop_tritonserver,
)
from fbmr.serving.triton.rollout import Rollout

BINARY_ENV = "FBMR_TRITONSERVER"
BACKENDS_ENV = "FBMR_TRITON_BACKENDS"


class TritonError(RuntimeError):
    """tritonserver could not be found, started or reached."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the binary is, and the backend directory to start it with (None: its default)."""

    binary: Path
    backend_directory: Path | None
    library_path: tuple[Path, ...] = ()


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fbmr"


def _pytriton_install() -> TritonInstall | None:
    try:
        import pytriton
    except ImportError:
        return None
    dist = Path(pytriton.__file__).parent / "tritonserver"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"nvidia-pytriton has no python-backend stub for Python {python}")
    backends = _cache_dir() / f"triton-backends-py{python}"
    target = backends / "python"
    # the backend's files only: an installer that compiles bytecode leaves a __pycache__ there
    wanted = [f for f in (dist / "backends" / "python").iterdir() if f.is_file()] + [stub]
    if not all((target / f.name).is_file() for f in wanted):
        # Assemble aside, then rename: two processes starting at once must not see half a copy.
        staging = backends.with_name(f"{backends.name}.{os.getpid()}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "python").mkdir(parents=True)
        for source in wanted:
            shutil.copy2(source, staging / "python" / source.name)
        shutil.rmtree(backends, ignore_errors=True)
        staging.rename(backends)
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(dist / "bin" / "tritonserver", backends, (libs,))


def find_tritonserver() -> TritonInstall:
    """The tritonserver to run: $FBMR_TRITONSERVER, then PATH, then the nvidia-pytriton wheel."""
    backends = os.environ.get(BACKENDS_ENV)
    if binary := os.environ.get(BINARY_ENV):
        if not Path(binary).is_file():
            raise TritonError(f"${BINARY_ENV} is {binary}, which is not a file")
        return TritonInstall(Path(binary), Path(backends) if backends else None)
    if binary := shutil.which("tritonserver"):
        return TritonInstall(Path(binary), Path(backends) if backends else None)
    if install := _pytriton_install():
        return install
    raise TritonError(
        "no tritonserver found: set $FBMR_TRITONSERVER, put it on PATH, or install "
        "fbmr-serving[local-triton] (the nvidia-pytriton wheel ships one)"
    )


def _environment(install: TritonInstall) -> dict[str, str]:
    """The server's environment: python-backend models run in an interpreter embedded in the
    stub, which must load this Python's libpython and import this environment's packages
    (numpy, onnxruntime)."""
    # not the facade's keys and tokens (`fbmr serve --with-triton` holds them in its
    # environment): the server and its model code need none of them
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith(ENV_PREFIX) and name.endswith(("_KEY", "_TOKEN")))
    }
    libdir = sysconfig.get_config_var("LIBDIR")
    library_path = [str(p) for p in install.library_path] + ([libdir] if libdir else [])
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    site_packages = sysconfig.get_paths()["purelib"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [site_packages, env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def server_command(
    install: TritonInstall,
    repository: Path,
    ports: TritonPorts,
    extra: Sequence[str] = (),
) -> list[str]:
    command = [
        str(install.binary),
        f"--model-repository={repository.resolve()}",
        f"--http-address={ports.host}",
        f"--http-port={ports.http}",
        f"--grpc-address={ports.host}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={ports.host}",
        f"--metrics-port={ports.metrics}",
        "--allow-metrics=true",
        # Ready means "takes requests", not "every model in the repository loaded": a refused new
        # version stays listed as unavailable, and strict readiness would then take a Triton
        # that serves the version in use out of service. Which version serves is the facade's
        # /readyz to say.
        "--strict-readiness=false",
        "--log-verbose=0",
        # Explicit model control: Triton starts with no model loaded and loads what fbmr asks
        # for (fbmr.serving.triton.rollout), so a damaged new version is refused while the version
        # in use keeps serving, instead of Triton's polling reloading it over and over.
        "--model-control-mode=explicit",
        # The python backend names its shared-memory regions by this prefix: unique per server,
        # so that two local servers (tests, a benchmark beside a demo) never share regions.
        f"--backend-config=python,shm-region-prefix-name={SHM_PREFIX}{os.getpid()}p{ports.grpc}_",
    ]
    if install.backend_directory:
        command.append(f"--backend-directory={install.backend_directory}")
    return [*command, *extra]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


class LocalTriton:
    """A tritonserver child process on a model repository; a context manager that stops it."""

    def __init__(
        self,
        repository: Path,
        ports: TritonPorts | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        admin_key: str | None = None,
    ) -> None:
        if not any(repository.glob("*/config.pbtxt")):
            raise TritonError(f"{repository} holds no model (no */config.pbtxt)")
        self.repository = repository
        self.ports = ports or TritonPorts()
        self.log_path = log_path or repository.parent / "tritonserver.log"
        # with a key, the repository API (loading models) answers only the rollout, which sends it
        self.admin_key = admin_key
        self.extra_args = [*extra_args, *restricted_flags(admin_key)]
        self.rollout: Rollout | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0, detach: bool = False) -> LocalTriton:
        """Start the server and load the version to serve (the pinned one, else the newest that
        loads and answers; `Rollout`); on failure, raise with the cause and the tail of Triton's
        log. `detach` starts it in its own session, to outlive this process."""
        install = find_tritonserver()
        reap_orphan_stubs()  # left by a server killed before this one
        command = server_command(install, self.repository, self.ports, self.extra_args)
        if not detach:
            command = dying_with_parent(command)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(install),
                start_new_session=detach,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with code {self.process.returncode}; its log "
                    f"({self.log_path}) ends:\n{_tail(self.log_path)}"
                )
            if is_live(self.ports.grpc_url, timeout_s=1.0) and self._load_models(deadline):
                return self
            time.sleep(0.5)
        self.stop()
        raise TritonError(
            f"tritonserver not ready after {timeout_s:.0f} s; its log ({self.log_path}) "
            f"ends:\n{_tail(self.log_path)}"
        )

    def _load_models(self, deadline: float) -> bool:
        """Load the version to serve; False while Triton is live but not ready for it yet (a
        restarted server says "Server not ready" for a moment), to be asked again."""
        # One rollout for the server's life: after a restart it remembers the version it served
        # and the versions it refused.
        if self.rollout is None:
            client = admin_client(InferenceServerClient(self.ports.grpc_url), self.admin_key)
            self.rollout = Rollout(self.repository, client)
        self.rollout.load_timeout_s = max(1.0, deadline - time.monotonic())
        try:
            status = self.rollout.converge()
        except InferenceServerException as err:
            if "Server not ready" in str(err) and time.monotonic() < deadline:
                return False
            self.stop()
            raise TritonError(f"tritonserver stopped answering: {err}") from None
        if status.in_use is None:
            self.stop()
            raise TritonError(
                f"no model version could be served from {self.repository}: {status.summary()}; "
                f"Triton's log ({self.log_path}) ends:\n{_tail(self.log_path)}"
            )
        return True

    @property
    def pid(self) -> int:
        if self.process is None:
            raise TritonError("tritonserver was not started")
        return self.process.pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server (`stop_tritonserver`); nothing if it was not started."""
        if self.process is not None:
            stop_tritonserver(self.process, timeout_s)

    def __enter__(self) -> LocalTriton:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
