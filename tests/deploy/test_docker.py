"""The images and the compose file, without Docker: what the Dockerfiles declare, what the
compose file wires, and the Triton entrypoint run for real against a stand-in tritonserver.
scripts/test-images.sh builds and runs the images themselves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fbmr.core import contract
from fbmr.core.artifacts import ARTIFACTS_FILE
from fbmr.serving.settings import FacadeSettings
from tests.helpers import REPO_ROOT

DOCKER = REPO_ROOT / "docker"
DOCKERFILES = {
    "facade": ("python:3.11-slim", "fbmr"),
    "triton-cpu": ("python:3.11-slim", "triton"),
    "triton-gpu": ("nvcr.io/nvidia/tritonserver:26.05-py3", "triton-server"),
}
sys.path.insert(0, str(DOCKER))
import check_repository  # noqa: E402


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_default_to_the_real_base_and_run_as_a_user_with_a_health_check(name: str) -> None:
    text = (DOCKER / f"{name}.Dockerfile").read_text()
    base, user = DOCKERFILES[name]
    assert re.search(rf"^ARG BASE={re.escape(base)}$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users[-1] == user
    assert re.search(r"^HEALTHCHECK .*CMD", text, re.M | re.S)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO_ROOT / path).exists() or path.startswith("build/wheelhouse"), path


def test_the_build_context_is_only_what_the_images_copy() -> None:
    lines = [
        line
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"  # everything out (.venv/, runs/, data), then only what is copied
    assert all(line.startswith("!") for line in lines[1:])
    assert not any(".venv" in line or "runs" in line for line in lines[1:])


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_starts_the_facade_once_triton_is_healthy(compose: dict) -> None:
    triton, facade = compose["services"]["triton"], compose["services"]["facade"]
    assert facade["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert "HEALTHCHECK" in (DOCKER / "triton-gpu.Dockerfile").read_text()
    for service in (triton, facade):
        assert service["restart"] in {"unless-stopped", "always"}
        assert (
            REPO_ROOT / "docker" / service["build"]["context"] / service["build"]["dockerfile"]
        ).is_file()
    assert triton["build"]["dockerfile"] == "docker/triton-gpu.Dockerfile"
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]


def _volume(spec: str) -> tuple[str, str]:
    """(container path, source) of a compose volume `SOURCE:PATH[:ro]`; SOURCE may hold `:-`."""
    source, path = re.fullmatch(r"(.+):(/[^:]+)(?::ro|:rw)?", spec).groups()
    return path, source


def test_compose_serves_one_repository_to_both_and_publishes_grpc_and_metrics(
    compose: dict,
) -> None:
    triton, facade = compose["services"]["triton"], compose["services"]["facade"]
    mounts = {
        name: dict(_volume(v) for v in s["volumes"])
        for name, s in (("triton", triton), ("facade", facade))
    }
    assert mounts["triton"]["/models"] == mounts["facade"]["/models"]
    assert mounts["triton"]["/tmp/fbmr-trt-cache"] in compose["volumes"]
    published = {p.rsplit(":", 1)[-1] for p in triton["ports"]} | {
        p.rsplit(":", 1)[-1] for p in facade["ports"]
    }
    assert {"8001", "8002", "8080"} <= published
    settings = {f"FBMR_{name.upper()}" for name in FacadeSettings.model_fields}
    assert set(facade["environment"]) <= settings | {"FBMR_WORKERS", "FBMR_INSECURE"}
    # the control plane's key reaches both sides; the metrics port stays on the instance
    assert "FBMR_TRITON_ADMIN_KEY" in triton["environment"]
    assert "FBMR_TRITON_ADMIN_KEY" in facade["environment"]
    assert not any(p.startswith("8002:") for p in triton["ports"])
    # Triton's HTTP and gRPC (its control plane among them) on the instance's loopback only
    for port in triton["ports"]:
        if port.rsplit(":", 1)[-1] in ("8000", "8001"):
            assert port.startswith("127.0.0.1:"), port
    assert facade["environment"]["FBMR_TRITON_URL"] == "triton:8001"


def test_the_tensorrt_cache_volume_is_where_export_points_onnxruntime() -> None:
    from fbmr.export.settings import ServingSettings  # torch-free, unlike the rest of export

    cache = ServingSettings().tensorrt_cache
    assert f"mkdir -p {cache} " in (DOCKER / "triton-gpu.Dockerfile").read_text()
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert any(v.endswith(f":{cache}") for v in compose["services"]["triton"]["volumes"])


def test_the_check_reads_the_names_export_writes() -> None:
    assert check_repository.ARTIFACTS_ENSEMBLE == contract.ARTIFACTS_ENSEMBLE
    assert check_repository.ARTIFACTS_FILE == ARTIFACTS_FILE


def _repository(root: Path, target: str) -> Path:
    for version, old in ((1, "cpu"), (2, target)):
        path = root / contract.ARTIFACTS_ENSEMBLE / str(version)
        path.mkdir(parents=True)
        (path / ARTIFACTS_FILE).write_text(json.dumps({"version": version, "target": old}))
    return root


def _entrypoint(
    repository: Path, target: str, tmp_path: Path, **environment: str
) -> subprocess.CompletedProcess:
    """docker/triton-entrypoint.sh with a tritonserver that prints its arguments."""
    fake = tmp_path / "tritonserver"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "FBMR_TARGET": target,
        "TRITON_MODEL_REPOSITORY": str(repository),
        "TRITONSERVER": str(fake),
        "TRITON_ADDRESS": "127.0.0.1",
        "TRITON_GRPC_PORT": "18101",
        "TRITON_BACKEND_DIRECTORY": "/opt/triton/backends",
        **environment,
    }
    return subprocess.run(
        ["sh", str(DOCKER / "triton-entrypoint.sh"), "--log-verbose=1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_entrypoint_starts_tritonserver_on_a_repository_of_its_target(tmp_path: Path) -> None:
    repository = _repository(tmp_path / "repo", "gpu")
    out = _entrypoint(repository, "gpu", tmp_path)
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    assert "model repository" in args[0] and "gpu target" in args[0]
    assert f"--model-repository={repository}" in args
    assert "--grpc-address=127.0.0.1" in args and "--grpc-port=18101" in args
    assert "--http-port=8000" in args and "--metrics-port=8002" in args
    assert "--backend-directory=/opt/triton/backends" in args
    assert args[-1] == "--log-verbose=1"  # the container's arguments come last and win


def test_entrypoint_refuses_a_repository_of_the_other_target(tmp_path: Path) -> None:
    out = _entrypoint(_repository(tmp_path / "repo", "cpu"), "gpu", tmp_path)
    assert out.returncode == 2
    assert "exported for the cpu target, this image serves the gpu target" in out.stderr
    assert "--target gpu" in out.stderr
    assert "--model-repository" not in out.stdout  # tritonserver never ran


def test_entrypoint_refuses_an_empty_repository(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = _entrypoint(tmp_path / "empty", "cpu", tmp_path)
    assert out.returncode == 2
    assert "holds no exported model version" in out.stderr


def test_entrypoint_restricts_the_control_plane_to_the_admin_key(tmp_path: Path) -> None:
    repository = _repository(tmp_path / "repo", "gpu")
    keyed = _entrypoint(
        repository, "gpu", tmp_path, TRITON_ADDRESS="0.0.0.0", FBMR_TRITON_ADMIN_KEY="k3y"
    )
    assert keyed.returncode == 0, keyed.stderr
    rule = f"{','.join(contract.TRITON_RESTRICTED_PROTOCOLS)}:{contract.TRITON_ADMIN_HEADER}=k3y"
    args = keyed.stdout.splitlines()
    assert f"--grpc-restricted-protocol={rule}" in args
    assert f"--http-restricted-api={rule}" in args
    # no key, on every interface: refused, unless told
    open_plane = _entrypoint(repository, "gpu", tmp_path, TRITON_ADDRESS="0.0.0.0")
    assert open_plane.returncode == 2 and "FBMR_TRITON_ADMIN_KEY" in open_plane.stderr
    assert "--model-repository" not in open_plane.stdout
    insecure = _entrypoint(repository, "gpu", tmp_path, TRITON_ADDRESS="0.0.0.0", FBMR_INSECURE="1")
    assert insecure.returncode == 0 and "restricted" not in insecure.stdout
