"""ONNX export and its parity check: refused on a corrupt file or a mismatch."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fbmr.export import onnx_models
from fbmr.export.export import export_run
from fbmr.export.onnx_models import (
    PARITY_TOLERANCE,
    ParityError,
    check_parity,
    export_onnx,
    load_run,
)
from fbmr.training.data.prepared import PreparedDataset


@pytest.fixture(scope="module")
def run_models(tiny_run, demo_prepared):
    return load_run(tiny_run, PreparedDataset(demo_prepared))


def _model(run_models, name):
    return next(m for m in run_models.models if m.name == name)


def test_run_has_encoders_heads_and_real_parity_inputs(run_models):
    names = [m.name for m in run_models.models]
    assert names[:5] == ["image_encoder", "image_head", "text_encoder", "text_head", "fusion_head"]
    photos = _model(run_models, "image_encoder").examples[0]
    assert photos.dtype == np.uint8 and photos.shape[1:] == (
        3,
        *[run_models.image_spec.image_size] * 2,
    )
    # validation photos, not blank: pixel values spread
    assert photos.std() > 10
    token_ids = _model(run_models, "text_encoder").examples[0]
    assert token_ids.dtype == np.int64 and (token_ids > 1).any()


def test_exported_model_matches_pytorch_on_any_batch_size(run_models, tmp_path):
    model = _model(run_models, "text_encoder")
    path = tmp_path / "text_encoder.onnx"
    export_onnx(model, path)
    assert check_parity(model, path) <= PARITY_TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    token_ids = np.concatenate([model.examples[0]] * 3)[:19]
    (got,) = session.run(None, {"token_ids": token_ids})
    with torch.no_grad():
        expected = model.module(torch.from_numpy(token_ids)).numpy()
    assert got.shape == (19, expected.shape[1])
    np.testing.assert_allclose(got, expected, atol=PARITY_TOLERANCE)


def test_corrupted_onnx_file_is_refused(run_models, tmp_path):
    model = _model(run_models, "image_head")
    path = tmp_path / "image_head.onnx"
    export_onnx(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParityError, match="cannot be loaded"):
        check_parity(model, path)


def test_parity_mismatch_is_refused(run_models, tmp_path):
    model = _model(run_models, "text_head")
    path = tmp_path / "text_head.onnx"
    export_onnx(model, path)
    changed = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        # noise, not a constant: a constant added to a head's weights and bias shifts every
        # class's logit alike, which the ensemble head's log-softmax cancels
        for parameter in changed.module.parameters():
            parameter.add_(torch.randn_like(parameter) * 1e-2)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(changed, path)


def test_export_refuses_and_leaves_the_repository_as_it_was(
    tiny_run, demo_prepared, tmp_path, monkeypatch
):
    repository = tmp_path / "model_repository"
    repository.mkdir()
    (repository / "README.md").write_text("contract\n")
    real_export = onnx_models.export_onnx

    def export_then_corrupt(model, path):
        real_export(model, path)
        if model.name == "fusion_head":
            path.write_bytes(b"not an onnx model")

    monkeypatch.setattr(onnx_models, "export_onnx", export_then_corrupt)
    with pytest.raises(ParityError, match="fusion_head"):
        export_run(tiny_run, repository, data=PreparedDataset(demo_prepared), progress=False)
    assert [p.name for p in repository.iterdir()] == ["README.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]


def test_export_records_parity_and_artifacts(cpu_repository, tiny_run):
    artifacts = json.loads((cpu_repository / "product_classifier" / "1" / "fbmr.json").read_text())
    assert artifacts["version"] == 1 and artifacts["target"] == "cpu"
    assert set(artifacts["parity_max_abs_diff"]) >= {"image_encoder", "text_encoder", "fusion_head"}
    assert max(artifacts["parity_max_abs_diff"].values()) <= PARITY_TOLERANCE
    labels = json.loads((tiny_run / "label_map.json").read_text())["classes"]
    assert artifacts["classes"] == labels
