"""ONNX export and its parity check: refused on a corrupt file or a mismatch."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fbmr.core.contract import TEXT_EMBEDDING, TEXT_ENCODER, TOKEN_IDS, Datatype
from fbmr.core.image import ImageSpec, image_pixels, normalize_pixels
from fbmr.export import onnx_files, onnx_models
from fbmr.export.export import export_run
from fbmr.export.onnx_files import (
    PARITY_TOLERANCE,
    ParityError,
    check_parity,
    export_onnx,
)
from fbmr.export.onnx_models import OnnxModel, TensorSpec
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.models import ImageModel, TextModel
from fbmr.training.trunks import TRUNKS, Backbone
from tests.helpers import REPO_ROOT


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


def test_members_reading_the_same_view_share_their_constants_in_the_file(tmp_path):
    torch.manual_seed(0)
    args = dict(vocab_size=50, word_dim=8, filters=0, max_words=6, ngram_buckets=4000, ngram_dim=5)
    encoder = TextModel(13, embedding_dim=24, members=3, **args).encoder
    ids = torch.cat([torch.randint(0, 50, (40, 6)), torch.randint(1, 300, (40, 5)),
                     torch.randint(1, 3, (40, 5))], dim=1)  # fmt: skip
    members = list(encoder.members)
    for member in members:  # every member reads the whole listing: the same lookup and IDF
        member.bag.set_idf(member.split(ids)[1])
    model = OnnxModel(
        TEXT_ENCODER,
        encoder,
        [TensorSpec(TOKEN_IDS, Datatype.INT64, (ids.shape[1],))],
        [TensorSpec(TEXT_EMBEDDING, Datatype.FP32, (24,))],
        [ids.numpy()],
    )
    path = tmp_path / "text_encoder.onnx"
    export_onnx(model, path)
    assert check_parity(model, path) <= PARITY_TOLERANCE
    contents = [
        (tuple(t.dims), t.data_type, onnx.numpy_helper.to_array(t).tobytes())
        for t in onnx.load(str(path)).graph.initializer
    ]
    assert len(set(contents)) == len(contents)  # each constant once
    # the three n-gram tables (random starts) stay three; the lookup (4,001 ids) is written once
    lookups = [c for c in contents if c[0] == (4001,)]
    assert len(lookups) == 1
    assert sum(c[0] == (members[0].bag.rows + 1, 5) for c in contents) == 3
    # where the code was checked out is not in the model: the same model, the same bytes
    written = path.read_bytes()
    assert str(REPO_ROOT).encode() not in written
    assert b"onnx_models.py" not in written and b"onnx_files.py" not in written


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


def _large_outputs(scale: float) -> OnnxModel:
    """A linear layer whose outputs lie in the thousands, its weights multiplied by `scale`."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    with torch.no_grad():
        layer.weight.mul_(1000 * scale)
        layer.bias.mul_(1000 * scale)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    return OnnxModel(
        "large",
        layer.eval(),
        [TensorSpec("x", Datatype.FP32, (16,))],
        [TensorSpec("y", Datatype.FP32, (8,))],
        [x],
    )


def test_parity_is_relative_to_an_outputs_magnitude(tmp_path):
    path = tmp_path / "large.onnx"
    export_onnx(_large_outputs(1.0), path)
    # float32 rounding on values in the thousands: above the absolute tolerance, and accepted
    assert check_parity(_large_outputs(1 + 1e-6), path) > PARITY_TOLERANCE
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(_large_outputs(1 + 1e-3), path)


def test_export_refuses_and_leaves_the_repository_as_it_was(
    tiny_run, demo_prepared, tmp_path, monkeypatch
):
    repository = tmp_path / "model_repository"
    repository.mkdir()
    (repository / "README.md").write_text("contract\n")
    real_export = onnx_files.export_onnx

    def export_then_corrupt(model, path):
        real_export(model, path)
        if model.name == "fusion_head":
            path.write_bytes(b"not an onnx model")

    monkeypatch.setattr(onnx_files, "export_onnx", export_then_corrupt)
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
    # the image trunk and its starting weights, as the image stage recorded them
    image_meta = torch.load(tiny_run / "image" / "best.pt", weights_only=True)["meta"]
    assert artifacts["image_trunk"] == {
        "backbone": "resnet18",
        "weights": image_meta["weights_source"],
    }
    assert artifacts["image_spec"] == image_meta["image_spec"]
    # what made the files
    assert artifacts["toolchain"] == {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "opset": onnx_files.OPSET,
    }


@pytest.mark.integration  # exports the pretrained trunk: seconds, not the fast tier's
def test_the_pretrained_lite_trunk_exports_with_parity_and_its_own_normalisation(
    demo_prepared, tmp_path
):
    """EfficientNet-Lite0 ("same" padding, ReLU6) through the export the served image encoder
    takes: uint8 pixels in, normalised in the graph with the trunk's mean and std (0.5, not
    ImageNet's), within the parity tolerance of PyTorch on real photos."""
    lite = TRUNKS[Backbone.efficientnet_lite0]
    spec = ImageSpec.for_image_size(96, lite.mean, lite.std)
    model = ImageModel(Backbone.efficientnet_lite0, 13, embedding_dim=32, weights="imagenet")
    data = PreparedDataset(demo_prepared)
    ids = data.images("val")["image_id"].head(8)
    photos = np.stack([image_pixels(data.image_path(i), spec) for i in ids])
    onnx_model = onnx_models.image_encoder(model.encoder.eval(), spec, 32, photos)
    path = tmp_path / "image_encoder.onnx"
    export_onnx(onnx_model, path)
    assert check_parity(onnx_model, path) <= PARITY_TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = onnx_model.examples[0][:3]
    (got,) = session.run(None, {"image": pixels})
    with torch.no_grad():
        want = model.encoder(torch.from_numpy(normalize_pixels(pixels, spec))).numpy()
    np.testing.assert_allclose(got, want, atol=PARITY_TOLERANCE)
    # the mean the graph subtracts is the trunk's, so ImageNet's gives another answer
    imagenet = ImageSpec.for_image_size(96)
    with torch.no_grad():
        other = model.encoder(torch.from_numpy(normalize_pixels(pixels, imagenet))).numpy()
    assert np.abs(got - other).max() > 100 * PARITY_TOLERANCE
