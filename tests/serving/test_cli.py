"""`fbmr index reload` and `fbmr model status|pin|unpin` ask a running facade through fbmr.client:
its answer printed as JSON, its refusal as one line and the user-error exit code."""

import json
from typing import ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

import fbmr.client
from fbmr.client import FbmrError
from fbmr.client.types import ModelVersions, Reload
from fbmr.core.cli import USER_ERROR, build_app

VERSIONS = ModelVersions(in_use=2, pinned=None, refused={3: "smoke test failed"}, rollout="idle")


class _FakeClient:
    """Stands in for fbmr.client.Client; records what it was asked."""

    asked: ClassVar[list[tuple[str, object]]] = []

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.asked.append(("url", url))
        self.asked.append(("api_key", api_key))

    def __enter__(self) -> "_FakeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def reload_index(self) -> Reload:
        return Reload(reloaded=True, version="7")

    def model_versions(self) -> ModelVersions:
        return VERSIONS

    def pin_model_version(self, version: int | None) -> ModelVersions:
        self.asked.append(("pin", version))
        if version == 9:
            raise FbmrError("version 9 is not exported")
        return VERSIONS


@pytest.fixture
def asked(monkeypatch):
    monkeypatch.setattr(fbmr.client, "Client", _FakeClient)
    monkeypatch.setattr(_FakeClient, "asked", [])
    return _FakeClient.asked


def test_reload_prints_what_the_facade_did(asked, monkeypatch):
    monkeypatch.setenv("FBMR_API_KEY", "secret")
    result = CliRunner().invoke(build_app(), ["index", "reload", "--url", "http://facade:1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"reloaded": True, "version": "7"}
    assert asked == [("url", "http://facade:1"), ("api_key", "secret")]


def test_model_commands_print_the_versions_and_refusals_exit_with_the_user_error(asked):
    result = CliRunner().invoke(build_app(), ["model", "status"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["refused"] == {"3": "smoke test failed"}
    assert CliRunner().invoke(build_app(), ["model", "unpin"]).exit_code == 0
    assert ("pin", None) in asked
    refused = CliRunner().invoke(build_app(), ["model", "pin", "9"])
    assert refused.exit_code == USER_ERROR and "version 9 is not exported" in refused.output


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "facade.internal", "::"])
def test_serve_refuses_a_network_address_without_a_key(host, monkeypatch, tmp_path):
    monkeypatch.delenv("FBMR_API_KEY", raising=False)
    monkeypatch.delenv("FBMR_INSECURE", raising=False)
    started: list[str] = []
    monkeypatch.setattr("fbmr.serving.cli._run_uvicorn", lambda *args: started.append(host))
    monkeypatch.setattr("signal.signal", lambda *args: None)  # keep pytest's own handlers
    # and its logging: `serve` would point the process's handlers at this runner's output,
    # which is closed once it returns (later log lines anywhere then fail to be written)
    monkeypatch.setattr("logging.config.dictConfig", lambda *args: None)
    command = ["serve", "--host", host, "--repo", str(tmp_path)]
    refused = CliRunner().invoke(build_app(), command)
    assert refused.exit_code == USER_ERROR and "without an API key" in refused.output
    assert started == []
    for allowed in (["--insecure"], ["--api-key", "k"]):
        assert CliRunner().invoke(build_app(), [*command, *allowed]).exit_code == 0
    assert CliRunner().invoke(build_app(), ["serve", "--repo", str(tmp_path)]).exit_code == 0
    assert started == [host, host, host]


@pytest.mark.parametrize("host", ["0.0.0.0", "triton.internal"])
def test_triton_start_refuses_a_network_address_without_an_admin_key(host, monkeypatch, tmp_path):
    """Its repository API can load model code: open to the network only when told so."""
    monkeypatch.setenv("FBMR_TRITON_ADMIN_KEY", "")
    monkeypatch.delenv("FBMR_INSECURE", raising=False)
    started: list[object] = []
    monkeypatch.setattr("fbmr.serving.triton.server.LocalTriton.start", started.append)
    command = ["triton", "start", "--host", host, "--repo", str(tmp_path)]
    refused = CliRunner().invoke(build_app(), command)
    assert refused.exit_code == USER_ERROR and "without an admin key" in refused.output
    assert started == []


def test_serve_with_triton_gives_its_triton_a_key_of_its_own(monkeypatch, artifact_repository):
    """No FBMR_TRITON_ADMIN_KEY: the local Triton's control plane takes a key made for the run,
    which the facade's settings hold (and its workers get through the environment)."""
    monkeypatch.setenv("FBMR_TRITON_ADMIN_KEY", "")
    keys: list[str | None] = []
    served: list[object] = []

    class Supervisor:
        def __init__(self, local, status_file) -> None:
            keys.append(local.admin_key)

        def start(self):
            return self

        def stop(self) -> None:
            pass

    monkeypatch.setattr("fbmr.serving.triton.supervisor.TritonSupervisor", Supervisor)
    monkeypatch.setattr(
        "fbmr.serving.cli._run_uvicorn", lambda settings, *a: served.append(settings)
    )
    monkeypatch.setattr("signal.signal", lambda *args: None)
    monkeypatch.setattr("logging.config.dictConfig", lambda *args: None)
    for _ in range(2):
        command = ["serve", "--with-triton", "--repo", str(artifact_repository)]
        done = CliRunner().invoke(build_app(), command)
        assert done.exit_code == 0, done.output
    assert all(keys) and len(set(keys)) == 2 and len(keys[0]) >= 32  # a new one each run
    assert [s.triton_admin_key.get_secret_value() for s in served] == keys


def test_serve_refuses_several_workers_on_a_milvus_lite_index(monkeypatch, tmp_path):
    """A milvus-lite file opens in one process only: said at the start, not as a worker's
    failure to open it."""
    from fbmr.core.contract import Kind
    from fbmr.serving.index.store import save_version

    monkeypatch.setattr("fbmr.serving.cli._run_uvicorn", lambda *args: None)
    monkeypatch.setattr("signal.signal", lambda *args: None)
    monkeypatch.setattr("logging.config.dictConfig", lambda *args: None)
    listings = [{"id": "a", "name": "a", "category": "c", "price": None, "location": None}]
    vectors = {Kind.combined: np.ones((1, 4), np.float32)}
    faiss_dir, lite_dir = tmp_path / "faiss", tmp_path / "lite"
    save_version(faiss_dir, vectors, listings, {})
    # a version whose meta.json names a milvus-lite file (what is read; no Milvus started here)
    meta_file = save_version(lite_dir, vectors, listings, {}) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "backend": "milvus", "milvus_uri": "milvus.db"}))
    command = ["serve", "--repo", str(tmp_path), "--workers", "2", "--index-dir"]
    refused = CliRunner().invoke(build_app(), [*command, str(lite_dir)])
    assert refused.exit_code == USER_ERROR and "milvus-lite file (milvus.db)" in refused.output
    assert CliRunner().invoke(build_app(), [*command, str(faiss_dir)]).exit_code == 0
    one = ["serve", "--repo", str(tmp_path), "--index-dir", str(lite_dir)]
    assert CliRunner().invoke(build_app(), one).exit_code == 0
