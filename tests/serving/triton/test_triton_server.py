"""A real tritonserver on the exported cpu repository, called over gRPC with tritonclient."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from fbmr.core.cli import build_app
from fbmr.core.contract import INPUT_DATATYPES, TRITON_ADMIN_KEY_ENV
from fbmr.export.onnx_files import PARITY_TOLERANCE
from fbmr.serving.triton.admin import admin_client
from fbmr.serving.triton.ports import TritonPorts
from fbmr.serving.triton.server import LocalTriton, TritonError
from tests.helpers import TRITON_ADMIN_KEY, free_ports

ALL_MODELS = {
    "image_encoder", "image_head", "text_encoder", "text_head", "fusion_head",
    "image_classifier", "text_classifier", "product_classifier",
}  # fmt: skip


@pytest.fixture(scope="module")
def inputs(run_models):
    photos = next(m for m in run_models.models if m.name == "image_encoder").examples[0]
    token_ids = next(m for m in run_models.models if m.name == "text_encoder").examples[0]
    n = min(len(photos), len(token_ids))
    return {"image": photos[:n], "token_ids": token_ids[:n]}


@pytest.fixture(scope="module")
def client(triton):
    bare = grpcclient.InferenceServerClient(triton.ports.grpc_url)
    with admin_client(bare, TRITON_ADMIN_KEY) as client:
        yield client


def test_the_repository_api_answers_only_to_the_admin_key(triton, client):
    """Triton's control plane (loading and unloading models, which can run model code) is
    closed to callers without the key; inference and health stay open."""
    with grpcclient.InferenceServerClient(triton.ports.grpc_url) as bare:
        for call in (
            lambda: bare.unload_model("product_classifier"),
            lambda: bare.load_model("product_classifier"),
            bare.get_model_repository_index,
        ):
            with pytest.raises(InferenceServerException, match=r"restricted|header"):
                call()
        assert bare.is_server_live() and bare.is_model_ready("product_classifier")
    wrong = admin_client(grpcclient.InferenceServerClient(triton.ports.grpc_url), "wrong")
    with wrong, pytest.raises(InferenceServerException):
        wrong.unload_model("product_classifier")
    http = f"http://127.0.0.1:{triton.ports.http}/v2/repository"
    refused = httpx.post(f"{http}/models/product_classifier/unload", json={})
    assert refused.status_code >= 400, refused.text
    assert httpx.get(f"http://127.0.0.1:{triton.ports.http}/v2/health/ready").status_code == 200
    index = client.get_model_repository_index()
    assert {m.name for m in index.models} == ALL_MODELS
    assert client.is_model_ready("product_classifier")


def _infer(client, model: str, inputs: dict[str, np.ndarray], outputs: list[str]):
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), INPUT_DATATYPES[name])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(
        model, tensors, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs]
    )
    return {name: result.as_numpy(name) for name in outputs}


class InProcess:
    """The same chains run in this process: onnxruntime on the repository's ONNX files, and the
    PyTorch modules they were exported from."""

    def __init__(self, repository, run_models):
        self.sessions = {
            m.name: ort.InferenceSession(str(repository / m.name / "1" / "model.onnx"))
            for m in run_models.models
        }
        self.modules = {m.name: m.module for m in run_models.models}

    def onnx(self, name, *arrays):
        session = self.sessions[name]
        feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
        return session.run(None, feeds)

    @torch.no_grad()
    def torch(self, name, *arrays):
        out = self.modules[name](*(torch.from_numpy(np.asarray(a)) for a in arrays))
        return [t.numpy() for t in out] if isinstance(out, tuple) else [out.numpy()]

    def chains(self, run, image, token_ids):
        """ensemble -> (probabilities, embedding) through `run` (onnx or torch)."""
        (image_embedding,) = run("image_encoder", image)
        (text_embedding,) = run("text_encoder", token_ids)
        _, image_probabilities = run("image_head", image_embedding)
        _, text_probabilities = run("text_head", text_embedding)
        _, probabilities, combined = run("fusion_head", image_embedding, text_embedding)
        return {
            "image_classifier": (image_probabilities, image_embedding),
            "text_classifier": (text_probabilities, text_embedding),
            "product_classifier": (probabilities, combined),
        }


ENSEMBLE_IO = {
    "image_classifier": (["image"], ["probabilities", "image_embedding"]),
    "text_classifier": (["token_ids"], ["probabilities", "text_embedding"]),
    "product_classifier": (["image", "token_ids"], ["probabilities", "combined_embedding"]),
}


def test_every_generated_model_is_ready(client):
    index = client.get_model_repository_index()
    assert {m.name for m in index.models} == ALL_MODELS
    assert all(m.state == "READY" for m in index.models), [
        (m.name, m.state, m.reason) for m in index.models
    ]


@pytest.mark.parametrize("ensemble", list(ENSEMBLE_IO))
def test_ensemble_matches_onnxruntime_and_pytorch(
    ensemble, client, inputs, cpu_repository, run_models
):
    in_process = InProcess(cpu_repository, run_models)
    expected_onnx = in_process.chains(in_process.onnx, inputs["image"], inputs["token_ids"])[
        ensemble
    ]
    expected_torch = in_process.chains(in_process.torch, inputs["image"], inputs["token_ids"])[
        ensemble
    ]
    names, outputs = ENSEMBLE_IO[ensemble]
    got = _infer(client, ensemble, {n: inputs[n] for n in names}, outputs)
    for name, onnx_value in zip(outputs, expected_onnx, strict=True):
        assert got[name].shape == onnx_value.shape
        np.testing.assert_allclose(got[name], onnx_value, atol=PARITY_TOLERANCE)
    np.testing.assert_array_equal(got["probabilities"].argmax(1), expected_torch[0].argmax(1))
    np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, atol=1e-5)


def test_concurrent_requests_are_all_served(client, inputs, triton):
    singles = [
        {"image": inputs["image"][i : i + 1], "token_ids": inputs["token_ids"][i : i + 1]}
        for i in range(len(inputs["image"]))
    ]
    requests = singles * 4
    url = triton.ports.grpc_url

    def call(request):
        with grpcclient.InferenceServerClient(url) as own:
            return _infer(own, "product_classifier", request, ["probabilities"])["probabilities"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, requests))
    whole_batch = _infer(client, "product_classifier", inputs, ["probabilities"])["probabilities"]
    for i, result in enumerate(results):
        np.testing.assert_allclose(result[0], whole_batch[i % len(singles)], atol=PARITY_TOLERANCE)
    stats = client.get_inference_statistics("fusion_head", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= len(requests) + len(singles)


@pytest.mark.integration  # starts a tritonserver of its own
def test_a_repository_whose_only_version_fails_to_load_stops_the_start_with_the_cause(
    cpu_repository, tmp_path
):
    repository = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, repository)
    (repository / "text_head" / "1" / "model.onnx").write_bytes(b"half a copy")
    server = LocalTriton(
        repository, TritonPorts("127.0.0.1", *free_ports(3)), tmp_path / "triton.log"
    )
    with pytest.raises(TritonError, match=r"version 1 refused: .*text_head.*(?i:protobuf)"):
        server.start(timeout_s=120)
    assert server.process.poll() is not None


def test_a_folder_without_models_is_refused(tmp_path):
    with pytest.raises(TritonError, match="holds no model"):
        LocalTriton(tmp_path)


def metrics_page(url: str, within_s: float = 30) -> bytes:
    """Triton's metrics page; its metrics server may start listening a moment after Triton
    reports ready (seconds on a loaded machine)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + within_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.integration  # `fbmr triton start` runs a tritonserver
def test_cli_starts_reports_and_stops_a_server(cpu_repository, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    http, grpc, metrics = free_ports(3)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    # the key from the environment, as a deployment gives it: status without it cannot read
    # the repository's state
    keyed = {TRITON_ADMIN_KEY_ENV: "cli-admin-key"}
    runner, app = CliRunner(env=keyed), build_app()
    started = runner.invoke(
        app,
        [
            "triton",
            "start",
            "--repo",
            str(cpu_repository),
            "--log",
            str(tmp_path / "t.log"),
            *ports,
        ],
    )
    try:
        assert started.exit_code == 0, started.output
        record = json.loads(started.output)
        assert record["grpc"] == f"127.0.0.1:{grpc}"
        status = runner.invoke(app, ["triton", "status", "--grpc-port", str(grpc)])
        assert status.exit_code == 0 and json.loads(status.output)["ready"] is True
        unkeyed = {TRITON_ADMIN_KEY_ENV: ""}
        status = runner.invoke(app, ["triton", "status", "--grpc-port", str(grpc)], env=unkeyed)
        assert status.exit_code == 1 and json.loads(status.output)["ready"] is False
        assert b"nv_inference_count" in metrics_page(record["metrics"])
    finally:
        stopped = runner.invoke(app, ["triton", "stop", "--grpc-port", str(grpc)])
    assert stopped.exit_code == 0, stopped.output
    assert runner.invoke(app, ["triton", "status", "--grpc-port", str(grpc)]).exit_code == 1


def test_tritonserver_gets_none_of_the_facades_keys(monkeypatch, tmp_path):
    """`fbmr serve --with-triton --workers N` holds every key in its environment (its workers
    read them there); the Triton it starts, and the model code Triton runs, get none."""
    from fbmr.serving.triton import server as triton_server

    secrets = {
        "FBMR_API_KEY": "a", "FBMR_WRITE_KEY": "w", "FBMR_ADMIN_KEY": "x",
        "FBMR_TRITON_ADMIN_KEY": "t", "FBMR_MILVUS_TOKEN": "m",
    }  # fmt: skip
    for name, value in {**secrets, "FBMR_TRITON_URL": "127.0.0.1:1"}.items():
        monkeypatch.setenv(name, value)
    install = triton_server.TritonInstall(tmp_path / "tritonserver", None)
    env = triton_server._environment(install)
    assert not set(secrets) & set(env)
    assert env["FBMR_TRITON_URL"] == "127.0.0.1:1" and "PATH" in env
