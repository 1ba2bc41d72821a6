"""Triton configs for both targets, ensembles, and versioned publishing."""

from __future__ import annotations

import json

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from fbmr.core.artifacts import ModelArtifacts, Provenance, latest_version_dir
from fbmr.core.contract import ENSEMBLE_NAMES
from fbmr.export.onnx_files import toolchain
from fbmr.export.repository import (
    next_version,
    publish_version,
    read_config,
    stage_version,
)
from fbmr.export.settings import ServingSettings, Target

COMPOSING = ["image_encoder", "image_head", "text_encoder", "text_head", "fusion_head"]


@pytest.fixture(scope="module")
def run_models(untrained_models):
    """The tiny run's models' names and tensors, untrained: what the configs are written from."""
    return untrained_models


def _stage(run_models, tmp_path, target, settings, version=1):
    """A staged repository version; the ONNX files are stand-ins (only copied here)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    stand_in = tmp_path / "stand-in.onnx"
    stand_in.write_bytes(b"onnx")
    files = {m.name: stand_in for m in run_models.models}
    staging = tmp_path / f"staging-{version}"
    provenance = Provenance("run", run_models.image_trunk, "float32", {}, toolchain())
    names = stage_version(run_models, files, staging, version, target, settings, provenance)
    return staging, names


def _tensors(fields):
    return [(t.name, t.data_type, list(t.dims)) for t in fields]


@pytest.mark.parametrize("target", list(Target))
def test_composing_models_have_the_serving_settings(run_models, tmp_path, target):
    settings = ServingSettings(
        max_batch_size=16,
        preferred_batch_sizes=(4, 16),
        instances=2,
        intra_op_threads=3,
        row_slices=2,
    )
    staging, names = _stage(run_models, tmp_path, target, settings)
    assert names == [*COMPOSING, *ENSEMBLE_NAMES]
    for name in COMPOSING:
        config = read_config(staging / name / "config.pbtxt")
        assert config.name == name and config.max_batch_size == 16
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
        policy = config.dynamic_batching.default_queue_policy
        assert policy.max_queue_size == settings.max_queue_size
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
        assert policy.default_timeout_microseconds == settings.queue_timeout_us
        (group,) = config.instance_group
        assert group.count == 2
        assert [w.batch_size for w in config.model_warmup] == [1, 16]
        assert set(config.model_warmup[0].inputs) == {t.name for t in config.input}
        version_files = sorted(p.name for p in (staging / name / "1").iterdir())
        if target is Target.gpu:
            assert config.backend == "onnxruntime" and group.kind == mc.ModelInstanceGroup.KIND_GPU
            assert version_files == ["model.onnx"]
        else:
            assert config.backend == "python" and group.kind == mc.ModelInstanceGroup.KIND_CPU
            assert version_files == ["model.onnx", "model.py"]
            parameters = {key: value.string_value for key, value in config.parameters.items()}
            assert parameters == {"intra_op_threads": "3", "allow_spinning": "0", "row_slices": "2"}


def test_both_targets_serve_the_same_tensors(run_models, tmp_path):
    cpu, _ = _stage(run_models, tmp_path / "cpu", Target.cpu, ServingSettings())
    gpu, _ = _stage(run_models, tmp_path / "gpu", Target.gpu, ServingSettings())
    for name in [*COMPOSING, *ENSEMBLE_NAMES]:
        a, b = read_config(cpu / name / "config.pbtxt"), read_config(gpu / name / "config.pbtxt")
        assert _tensors(a.input) == _tensors(b.input)
        assert _tensors(a.output) == _tensors(b.output)


def test_gpu_target_can_use_tensorrt_fp16_with_an_engine_cache(run_models, tmp_path):
    staging, _ = _stage(run_models, tmp_path, Target.gpu, ServingSettings(tensorrt_fp16=True))
    config = read_config(staging / "image_encoder" / "config.pbtxt")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_enable"] == "true"
    assert accelerator.parameters["trt_engine_cache_path"]


def test_ensembles_chain_existing_models_with_matching_batch_sizes(run_models, tmp_path):
    staging, _ = _stage(
        run_models,
        tmp_path,
        Target.cpu,
        ServingSettings(max_batch_size=8, preferred_batch_sizes=(8,)),
    )
    outputs = {}
    for name in ENSEMBLE_NAMES:
        config = read_config(staging / name / "config.pbtxt")
        assert config.platform == "ensemble" and config.max_batch_size == 8
        produced = {t.name for t in config.input}
        for step in config.ensemble_scheduling.step:
            # pinned to the version exported with it, never "latest": no mix while Triton swaps
            assert step.model_version == 1
            assert (staging / step.model_name / "1" / "model.onnx").is_file()
            step_config = read_config(staging / step.model_name / "config.pbtxt")
            assert step_config.version_policy.latest.num_versions == 2
            assert step_config.max_batch_size == config.max_batch_size
            assert set(step.input_map) <= {t.name for t in step_config.input}
            assert set(step.input_map.values()) <= produced, "a step reads a tensor made later"
            assert set(step.output_map) <= {t.name for t in step_config.output}
            produced |= set(step.output_map.values())
        assert {t.name for t in config.output} <= produced
        outputs[name] = [t.name for t in config.output]
        artifacts = json.loads((staging / name / "1" / "fbmr.json").read_text())
        assert artifacts["classes"] == run_models.classes
        assert artifacts["max_length"] == run_models.tokenizer.max_length
    assert outputs == {
        "image_classifier": ["probabilities", "image_embedding"],
        "text_classifier": ["probabilities", "text_embedding"],
        "product_classifier": ["probabilities", "combined_embedding"],
    }


def test_each_export_publishes_a_new_version_and_drops_stale_models(run_models, tmp_path):
    repository = tmp_path / "model_repository"
    assert next_version(repository) == 1
    staging, names = _stage(run_models, tmp_path, Target.cpu, ServingSettings())
    (staging / "retired_model" / "1").mkdir(parents=True)
    (staging / "retired_model" / "config.pbtxt").write_text('name: "retired_model"\n')
    publish_version(staging, repository, [*names, "retired_model"], 1)
    assert next_version(repository) == 2

    staging, names = _stage(run_models, tmp_path, Target.cpu, ServingSettings(), version=2)
    publish_version(staging, repository, names, 2)
    assert not (repository / "retired_model").exists()
    for name in names:
        assert sorted(p.name for p in (repository / name).iterdir()) == ["1", "2", "config.pbtxt"]
    assert latest_version_dir(repository) == repository / "product_classifier" / "2"
    artifacts = ModelArtifacts.load(repository)
    assert artifacts.version == 2 and list(artifacts.labels.classes) == run_models.classes
    assert artifacts.image_spec == run_models.image_spec
    manifest = json.loads((repository / "repository.json").read_text())
    assert manifest["version"] == 2 and manifest["models"] == names


def test_serving_settings_are_checked():
    with pytest.raises(ValueError, match="preferred batch sizes"):
        ServingSettings(max_batch_size=4, preferred_batch_sizes=(8,))
    with pytest.raises(ValueError, match="at least 1"):
        ServingSettings(instances=0)
    with pytest.raises(ValueError, match="row_slices must be 0"):
        ServingSettings(row_slices=-1)
