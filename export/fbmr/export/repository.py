"""The Triton model repository: one directory per ONNX model and per ensemble, two targets.

    gpu  backend "onnxruntime" on KIND_GPU (optionally TensorRT FP16 with an engine cache), for the
         NVIDIA Triton container;
    cpu  python-backend models running the same model.onnx with onnxruntime, for the tritonserver
         shipped in the nvidia-pytriton wheel (python backend only).

Both targets serve the same tensors under the same names; ensembles chain encoders and heads
inside Triton. Every export adds a new version number to every model, built aside and moved in,
with the tokeniser, label map and image settings beside the ensembles' versions so that the
facade reads the artifacts that match the models it calls.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2 as mc

from fbmr.core import contract as c
from fbmr.core.artifacts import (
    ARTIFACTS_FILE,
    REPOSITORY_MANIFEST,
    ModelVersionSpec,
    Provenance,
)
from fbmr.core.fileio import atomic_write_json
from fbmr.export.onnx_models import RunModels, TensorSpec
from fbmr.export.settings import ServingSettings, Target

REPOSITORY_FORMAT = "fbmr.model_repository/1"
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


# Composing models keep the previous version loaded beside the new one, so that requests already
# inside the previous version's ensemble finish on it; the one before is unloaded by Triton.
COMPOSING_VERSIONS = 2


class _TensorFields(Protocol):
    """A config's repeated input or output field."""

    def add(self, *, name: str, data_type: int, dims: list[int]) -> object: ...


def _add_tensors(fields: _TensorFields, specs: list[TensorSpec]) -> None:
    for spec in specs:
        fields.add(
            name=spec.name, data_type=mc.DataType.Value(spec.dtype.config), dims=list(spec.dims)
        )


def model_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    target: Target,
    settings: ServingSettings,
) -> mc.ModelConfig:
    """The config of one ONNX model for `target`."""
    config = mc.ModelConfig(name=name, max_batch_size=settings.max_batch_size)
    config.version_policy.latest.num_versions = COMPOSING_VERSIONS
    _add_tensors(config.input, inputs)
    _add_tensors(config.output, outputs)
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
    batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    policy = batching.default_queue_policy
    policy.max_queue_size = settings.max_queue_size
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = settings.queue_timeout_us
    policy.allow_timeout_override = True
    # Warm-up runs before the model is marked ready, so the first real request does not pay for
    # onnxruntime's (or TensorRT's) first-run initialisation.
    for batch_size in sorted({1, settings.max_batch_size}):
        warmup = config.model_warmup.add(name=f"zeros_batch_{batch_size}", batch_size=batch_size)
        for spec in inputs:
            data = warmup.inputs[spec.name]
            data.data_type = mc.DataType.Value(spec.dtype.config)
            data.dims.extend(spec.dims)
            data.zero_data = True
    if target is Target.gpu:
        config.backend = "onnxruntime"
        config.instance_group.add(count=settings.instances, kind=mc.ModelInstanceGroup.KIND_GPU)
        if settings.tensorrt_fp16:
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
                name="tensorrt"
            )
            accelerator.parameters["precision_mode"] = "FP16"
            accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
            accelerator.parameters["trt_engine_cache_enable"] = "true"
            accelerator.parameters["trt_engine_cache_path"] = settings.tensorrt_cache
    else:
        config.backend = "python"
        config.instance_group.add(count=settings.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        config.parameters["intra_op_threads"].string_value = str(settings.intra_op_threads)
        config.parameters["allow_spinning"].string_value = "1" if settings.spinning else "0"
        config.parameters["row_slices"].string_value = str(settings.row_slices)
    return config


def ensemble_configs(run: RunModels, max_batch_size: int, version: int) -> list[mc.ModelConfig]:
    """The three ensembles of one exported `version`. Each step maps a model's tensors (key) to
    ensemble tensors (value) and is pinned to that version of the model: an ensemble's config is
    shared by all its versions, so while Triton swaps versions a request that entered the old
    ensemble still runs the old composing models (kept loaded: `COMPOSING_VERSIONS`), never a
    mix of the two."""
    specs = {m.name: m for m in run.models}

    def tensor(model: str, name: str) -> TensorSpec:
        model_spec = specs[model]
        return next(t for t in [*model_spec.inputs, *model_spec.outputs] if t.name == name)

    text_encoder = run.product_text_encoder
    image, text = c.ENSEMBLES[c.Kind.image], c.ENSEMBLES[c.Kind.text]
    combined = c.ENSEMBLES[c.Kind.combined]
    encode_image = (c.IMAGE_ENCODER, {c.IMAGE: c.IMAGE}, {c.IMAGE_EMBEDDING: c.IMAGE_EMBEDDING})
    layouts = {
        image.name: (
            [tensor(c.IMAGE_ENCODER, c.IMAGE)],
            [tensor(c.IMAGE_HEAD, c.PROBABILITIES), tensor(c.IMAGE_ENCODER, c.IMAGE_EMBEDDING)],
            [
                encode_image,
                (
                    c.IMAGE_HEAD,
                    {c.IMAGE_EMBEDDING: c.IMAGE_EMBEDDING},
                    {c.PROBABILITIES: c.PROBABILITIES},
                ),
            ],
        ),
        text.name: (
            [tensor(c.TEXT_ENCODER, c.TOKEN_IDS)],
            [tensor(c.TEXT_HEAD, c.PROBABILITIES), tensor(c.TEXT_ENCODER, c.TEXT_EMBEDDING)],
            [
                (
                    c.TEXT_ENCODER,
                    {c.TOKEN_IDS: c.TOKEN_IDS},
                    {c.TEXT_EMBEDDING: c.TEXT_EMBEDDING},
                ),
                (
                    c.TEXT_HEAD,
                    {c.TEXT_EMBEDDING: c.TEXT_EMBEDDING},
                    {c.PROBABILITIES: c.PROBABILITIES},
                ),
            ],
        ),
        combined.name: (
            [tensor(c.IMAGE_ENCODER, c.IMAGE), tensor(text_encoder, c.TOKEN_IDS)],
            [
                tensor(c.FUSION_HEAD, c.PROBABILITIES),
                tensor(c.FUSION_HEAD, c.COMBINED_EMBEDDING),
            ],
            [
                encode_image,
                (text_encoder, {c.TOKEN_IDS: c.TOKEN_IDS}, {c.TEXT_EMBEDDING: c.TEXT_EMBEDDING}),
                (
                    c.FUSION_HEAD,
                    {c.IMAGE_EMBEDDING: c.IMAGE_EMBEDDING, c.TEXT_EMBEDDING: c.TEXT_EMBEDDING},
                    {c.PROBABILITIES: c.PROBABILITIES, c.COMBINED_EMBEDDING: c.COMBINED_EMBEDDING},
                ),
            ],
        ),
    }
    configs = []
    for name, (inputs, outputs, steps) in layouts.items():
        # An ensemble's max_batch_size must not exceed its composing models'; equal keeps a full
        # client batch in one pass.
        config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
        _add_tensors(config.input, inputs)
        _add_tensors(config.output, outputs)
        for model, input_map, output_map in steps:
            step = config.ensemble_scheduling.step.add(model_name=model, model_version=version)
            step.input_map.update(input_map)
            step.output_map.update(output_map)
        configs.append(config)
    return configs


def write_config(config: mc.ModelConfig, path: Path) -> None:
    path.write_text(text_format.MessageToString(config))


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def next_version(repository: Path) -> int:
    """One more than the highest version of any model in the repository (1 when empty)."""
    versions = [int(p.name) for p in repository.glob("*/*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def stage_version(
    run: RunModels,
    onnx_files: dict[str, Path],
    staging: Path,
    version: int,
    target: Target,
    settings: ServingSettings,
    provenance: Provenance,
) -> list[str]:
    """Lay out one repository version under `staging` (the same shape as the repository);
    returns the model names, composing models first, ensembles last."""
    names = []
    for model in run.models:
        version_dir = staging / model.name / str(version)
        version_dir.mkdir(parents=True)
        shutil.copy2(onnx_files[model.name], version_dir / "model.onnx")
        if target is Target.cpu:
            shutil.copy2(PYTHON_MODEL, version_dir / "model.py")
        config = model_config(model.name, model.inputs, model.outputs, target, settings)
        write_config(config, staging / model.name / "config.pbtxt")
        names.append(model.name)
    artifacts = ModelVersionSpec(
        version=version,
        target=target.value,
        classes=list(run.classes),
        image_spec=run.image_spec,
        max_length=run.tokenizer.max_length,
        serving=asdict(settings),
        provenance=provenance,
    )
    for config in ensemble_configs(run, settings.max_batch_size, version):
        version_dir = staging / config.name / str(version)
        version_dir.mkdir(parents=True)
        run.tokenizer.save(version_dir / artifacts.tokenizer)
        run.label_map.save(version_dir / artifacts.labels)
        artifacts.save(version_dir / ARTIFACTS_FILE)
        write_config(config, staging / config.name / "config.pbtxt")
        names.append(config.name)
    return names


def publish_version(staging: Path, repository: Path, names: list[str], version: int) -> None:
    """Move a staged version into the repository. Each version directory arrives by one rename
    and each config by one replace; ensembles come last, so a polling Triton never sees an
    ensemble whose steps are missing. Models that the new version no longer has are removed."""
    repository.mkdir(parents=True, exist_ok=True)
    for name in names:
        (repository / name).mkdir(exist_ok=True)
        os.rename(staging / name / str(version), repository / name / str(version))
        config, published = staging / name / "config.pbtxt", repository / name / "config.pbtxt"
        # An unchanged config is left alone: a polling Triton reloads every version of a model
        # whose config file changes, and only the new version needs loading.
        if not published.is_file() or published.read_bytes() != config.read_bytes():
            os.replace(config, published)
    manifest_path = repository / REPOSITORY_MANIFEST
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text()).get("models", [])
        for stale in set(previous) - set(names):
            shutil.rmtree(repository / stale, ignore_errors=True)
    manifest = {
        "format": REPOSITORY_FORMAT,
        "version": version,
        "models": names,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(manifest_path, manifest)
