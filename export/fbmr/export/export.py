"""`fbmr export`: a trained run directory -> ONNX files checked for parity -> a new version in a
Triton model repository. Nothing is written to the repository unless every model passes."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fbmr.core.artifacts import Provenance
from fbmr.export import int8_gate, onnx_files, onnx_models, quantize
from fbmr.export.int8_gate import GateFigures
from fbmr.export.repository import next_version, publish_version, stage_version
from fbmr.export.settings import Int8Settings, Precision, ServingSettings, Target
from fbmr.training.data.prepared import PreparedDataset

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    repository: Path
    version: int
    target: Target
    models: list[str]
    # largest |ONNX - PyTorch| per exported model (the float32 files)
    parity: dict[str, float]
    precision: Precision = Precision.float32
    # INT8 only: each pipeline's figures on the validation split (fbmr.export.quantize)
    gate: dict[str, GateFigures] = field(default_factory=dict)
    # INT8 only: the encoders kept float32 because in INT8 they missed the gate, with why
    kept_float32: dict[str, str] = field(default_factory=dict)


def export_run(
    run_dir: Path,
    repository: Path,
    target: Target = Target.cpu,
    settings: ServingSettings | None = None,
    data: PreparedDataset | None = None,
    tolerance: float = onnx_files.PARITY_TOLERANCE,
    progress: bool = True,
    precision: Precision = Precision.float32,
    int8: Int8Settings | None = None,
) -> ExportReport:
    """Export every model of `run_dir` and publish them as the repository's next version.

    Raises ParityError (and leaves the repository as it was) when any ONNX model cannot be
    loaded or differs from PyTorch by more than `tolerance` on validation inputs. With
    `precision` int8 (cpu target) the float32 files that passed are quantised and must then pass
    the accuracy gate; AccuracyGateError, with the figures, when they do not.
    """
    settings = settings or ServingSettings()
    if precision is Precision.int8 and target is not Target.cpu:
        raise ValueError("INT8 files are for the cpu target; on GPU use TensorRT FP16 or INT8")
    run = onnx_models.load_run(run_dir, data)
    version = next_version(repository)
    repository.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the repository (same filesystem, so publishing is renames) but outside it,
    # so a Triton polling the repository never sees a half-built version.
    with tempfile.TemporaryDirectory(prefix=f".{repository.name}.", dir=repository.parent) as tmp:
        onnx_dir, staging = Path(tmp) / "onnx", Path(tmp) / "repository"
        onnx_dir.mkdir()
        files: dict[str, Path] = {}
        parity: dict[str, float] = {}
        for model in tqdm(run.models, desc="export", unit="model", disable=not progress):
            files[model.name] = onnx_dir / f"{model.name}.onnx"
            onnx_files.export_onnx(model, files[model.name])
            parity[model.name] = onnx_files.check_parity(model, files[model.name], tolerance)
            log.info("%s: max |ONNX - PyTorch| = %.2e", model.name, parity[model.name])
        gate: dict[str, GateFigures] = {}
        kept: dict[str, str] = {}
        int8_record = None
        if precision is Precision.int8:
            files, gate, kept, int8_record = _int8_files(
                files, onnx_dir, run, run.data, int8 or Int8Settings(), progress
            )
        provenance = Provenance(
            run=str(run_dir.resolve()),
            image_trunk=run.image_trunk,
            precision=precision.value,
            parity_max_abs_diff=parity,
            toolchain=onnx_files.toolchain(),
            int8=int8_record,
        )
        names = stage_version(run, files, staging, version, target, settings, provenance)
        publish_version(staging, repository, names, version)
    return ExportReport(repository, version, target, names, parity, precision, gate, kept)


def _int8_files(
    files: dict[str, Path],
    onnx_dir: Path,
    run: onnx_models.RunModels,
    data: PreparedDataset,
    settings: Int8Settings,
    progress: bool,
) -> tuple[dict[str, Path], dict[str, GateFigures], dict[str, str], dict[str, Any]]:
    """The INT8 files, their gate figures (raises AccuracyGateError on a miss), the encoders
    kept float32 with why, and what `fbmr.json` records about them."""
    int8_files = quantize.quantize_encoders(files, onnx_dir, run, data, settings, progress)
    choice = int8_gate.choose_int8(files, int8_files, run, data, settings, progress)
    for kind, figures in choice.figures.items():
        log.info(
            "int8 %s: agreement %.2f%%, accuracy %.2f%% (float32 %.2f%%)",
            kind,
            100 * figures.agreement,
            100 * figures.accuracy_int8,
            100 * figures.accuracy_float32,
        )
    quantized = [name for name in files if choice.files[name] != files[name]]
    provenance = int8_gate.int8_provenance(settings, choice, quantized)
    return choice.files, choice.figures, choice.kept_float32, provenance
