"""INT8 export: which models are quantised and how, the accuracy gate (recorded, and refusing a
miss), and a real Triton serving the INT8 files through the unchanged ensembles."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from fbmr.core.artifacts import ARTIFACTS_FILE, ModelArtifacts, latest_version_dir
from fbmr.core.cli import build_app
from fbmr.core.contract import (
    FUSION_HEAD,
    FUSION_TEXT_ENCODER,
    IMAGE,
    IMAGE_EMBEDDING,
    IMAGE_ENCODER,
    PROBABILITIES,
    TEXT_EMBEDDING,
    TEXT_ENCODER,
    TOKEN_IDS,
    Kind,
)
from fbmr.export import quantize
from fbmr.export.export import export_run
from fbmr.export.int8_gate import AccuracyGateError, GateFigures
from fbmr.export.settings import Int8Settings, Precision
from fbmr.training.data.prepared import PreparedDataset
from tests.helpers import INT8_CALIBRATION_PHOTOS, serving_stack, split_listings
from tests.serving.onnx_reference import OnnxReference


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _files(repository, version: int = 1) -> dict[str, object]:
    return {p.parent.parent.name: p for p in repository.glob(f"*/{version}/model.onnx")}


def test_encoders_are_int8_and_heads_float32(int8_repository, cpu_repository):
    files = _files(int8_repository)
    # static QDQ: int8 weights and uint8 activations around the convolutions
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _op_types(files[IMAGE_ENCODER])
    # the ReLUs are folded into the activations' ranges (Conv+ReLU one int8 kernel), not left
    # in float32 between a DequantizeLinear and a QuantizeLinear on the unclipped range
    float_ops = _op_types(_files(cpu_repository)[IMAGE_ENCODER])
    assert float_ops & {"Relu", "Clip"}
    assert not _op_types(files[IMAGE_ENCODER]) & {"Relu", "Clip"}
    weights = onnx.load(str(files[IMAGE_ENCODER])).graph.initializer
    assert any(w.data_type == onnx.TensorProto.INT8 for w in weights)
    # dynamic: the MatMuls take int8 weights, activations quantised at run time
    assert "MatMulInteger" in _op_types(files[TEXT_ENCODER])
    for head in ("image_head", "text_head", FUSION_HEAD):
        assert not _op_types(files[head]) & {"QuantizeLinear", "MatMulInteger"}, head
        assert _op_types(files[head]) == _op_types(_files(cpu_repository)[head]), head
    float32 = _files(cpu_repository)[IMAGE_ENCODER]
    assert files[IMAGE_ENCODER].stat().st_size < 0.5 * float32.stat().st_size  # int8 weights


def test_the_gate_figures_are_recorded(int8_repository, cpu_repository, demo_prepared):
    meta = json.loads((latest_version_dir(int8_repository) / ARTIFACTS_FILE).read_text())
    assert meta["precision"] == "int8"
    int8 = meta["int8"]
    assert int8["calibration"] == {"split": "train", "photos": INT8_CALIBRATION_PHOTOS, "seed": 0}
    assert set(int8["quantized"]) >= {IMAGE_ENCODER, TEXT_ENCODER}
    # the figures found again by plain onnxruntime sessions on each export's files, photo by
    # photo (tests/serving/onnx_reference.py), from the served inputs of every val photo
    data = PreparedDataset(demo_prepared)
    products, images = data.products("val").set_index("product_id"), data.images("val")
    references = {
        name: OnnxReference(repository, version=int(latest_version_dir(repository).name))
        for name, repository in (("float32", cpu_repository), ("int8", int8_repository))
    }
    top1: dict[tuple[str, Kind], list[str]] = {}
    for image_id, product_id in zip(images["image_id"], images["product_id"], strict=True):
        photo = data.image_path(image_id).read_bytes()
        text = data.text(products.loc[product_id])
        for (name, reference), kind in itertools.product(references.items(), Kind):
            probabilities = reference.probabilities(kind, photo, text)
            top1.setdefault((name, kind), []).append(max(probabilities, key=probabilities.get))
    classes = references["float32"].artifacts.labels.classes
    labels = [classes[i] for i in images["label_id"]]
    total = len(labels)
    for kind in Kind:
        figures = int8["gate"][kind.value]
        assert figures["listings"] == total
        float32, int8_top1 = top1["float32", kind], top1["int8", kind]
        expected = {
            "agreement": np.mean([a == b for a, b in zip(float32, int8_top1, strict=True)]),
            "accuracy_float32": np.mean([a == b for a, b in zip(float32, labels, strict=True)]),
            "accuracy_int8": np.mean([a == b for a, b in zip(int8_top1, labels, strict=True)]),
        }
        # one photo at a time here, batches in the gate: the barely trained tiny model has
        # near-ties that the rounding of another batch size can turn, so a photo or two of
        # slack (a figure computed wrongly is off by far more)
        for name, value in expected.items():
            assert figures[name] == pytest.approx(value, abs=2.5 / total), (kind, name)
        assert figures["drop"] == pytest.approx(
            figures["accuracy_float32"] - figures["accuracy_int8"]
        )


def _black_calibration(monkeypatch) -> None:
    """Calibrated on black photos, every activation range is wrong: the embeddings collapse."""
    real = quantize.calibration_photos
    monkeypatch.setattr(quantize, "calibration_photos", lambda *args: np.zeros_like(real(*args)))


def _export_int8(tiny_run, demo_prepared, repository):
    return export_run(
        tiny_run,
        repository,
        data=PreparedDataset(demo_prepared),
        progress=False,
        precision=Precision.int8,
        int8=Int8Settings(calibration_photos=8),
    )


def test_an_encoder_that_misses_the_gate_stays_float32(
    tiny_run, demo_prepared, cpu_repository, tmp_path, monkeypatch
):
    _black_calibration(monkeypatch)
    repository = tmp_path / "model_repository"
    report = _export_int8(tiny_run, demo_prepared, repository)
    assert set(report.kept_float32) == {IMAGE_ENCODER}
    assert re.search(r"image: agreement \d+\.\d+% < 99%", report.kept_float32[IMAGE_ENCODER])
    files = _files(repository)
    assert files[IMAGE_ENCODER].read_bytes() == _files(cpu_repository)[IMAGE_ENCODER].read_bytes()
    assert "MatMulInteger" in _op_types(files[TEXT_ENCODER])
    assert all(f.agreement >= 0.99 for f in report.gate.values())  # what was published passes
    meta = json.loads((latest_version_dir(repository) / ARTIFACTS_FILE).read_text())
    assert set(meta["int8"]["kept_float32"]) == {IMAGE_ENCODER}
    assert set(meta["int8"]["quantized"]) == {TEXT_ENCODER}


def test_an_export_with_no_encoder_passing_is_refused_with_the_figures(
    tiny_run, demo_prepared, tmp_path, monkeypatch
):
    _black_calibration(monkeypatch)

    def damaged(source, target):  # a quantiser gone wrong: every weight of the wrong sign
        model = onnx.load(str(source))
        for weight in model.graph.initializer:
            if weight.data_type == onnx.TensorProto.FLOAT:
                array = -numpy_helper.to_array(weight)
                weight.CopyFrom(numpy_helper.from_array(array, weight.name))
        onnx.save(model, str(target))

    monkeypatch.setattr(quantize, "quantize_text_encoder", damaged)
    repository = tmp_path / "model_repository"
    with pytest.raises(AccuracyGateError) as refused:
        _export_int8(tiny_run, demo_prepared, repository)
    assert re.search(r"image_encoder in INT8: image: agreement \d+\.\d+% < 99%", str(refused.value))
    assert "text_encoder in INT8: text: agreement" in str(refused.value)
    assert not list(repository.glob("*/1"))  # nothing published


def test_gate_figures_name_each_miss():
    settings = Int8Settings(min_agreement=0.99, max_accuracy_drop=0.005)
    assert GateFigures(200, 0.995, 0.80, 0.797).misses(settings) == []
    missed = GateFigures(200, 0.98, 0.80, 0.78).misses(settings)
    assert len(missed) == 2 and "agreement 98.00%" in missed[0] and "drop 2.00%" in missed[1]


def test_int8_is_refused_for_the_gpu_target(tiny_run, tmp_path):
    result = CliRunner().invoke(
        build_app(),
        [
            "export",
            "--run",
            str(tiny_run),
            "--repo",
            str(tmp_path / "r"),
            "--target",
            "gpu",
            "--precision",
            "int8",
        ],
    )
    assert result.exit_code == 2 and "cpu target" in result.output


def test_triton_serves_the_int8_files(int8_repository, facade_settings, demo_prepared, tmp_path):
    photo, text, _ = split_listings(demo_prepared, "val")[0]
    artifacts = ModelArtifacts.load(int8_repository)
    with serving_stack(int8_repository, facade_settings, tmp_path) as client:
        response = client.post(
            "/v1/predict/combined", files={"photo": ("p.jpg", photo)}, data={"text": text}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    # the same listing through the INT8 files in-process gives the served probabilities
    files = _files(int8_repository)
    product_text = FUSION_TEXT_ENCODER if FUSION_TEXT_ENCODER in files else TEXT_ENCODER
    # (plain onnxruntime sessions, not the quantiser's own pipelines, so a wrong wiring there
    # cannot hide here)

    def run(name: str, output: str, **feeds: np.ndarray) -> np.ndarray:
        return ort.InferenceSession(str(files[name])).run([output], feeds)[0]

    pixels = artifacts.image_input(photo)[None]
    token_ids = artifacts.text_input(text)[None]
    image = run(IMAGE_ENCODER, IMAGE_EMBEDDING, **{IMAGE: pixels})
    texts = run(product_text, TEXT_EMBEDDING, **{TOKEN_IDS: token_ids})
    expected = run(FUSION_HEAD, PROBABILITIES, **{IMAGE_EMBEDDING: image, TEXT_EMBEDDING: texts})[0]
    served = dict(zip(body["classes"], body["probabilities"], strict=True))
    got = np.array([served[c] for c in artifacts.labels.classes])
    np.testing.assert_allclose(got, expected, atol=1e-5)
