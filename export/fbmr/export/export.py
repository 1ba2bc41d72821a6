"""`fbmr export`: a trained run directory -> ONNX files checked for parity -> a new version in a
Triton model repository. Nothing is written to the repository unless every model passes."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fbmr.export import onnx_models
from fbmr.export.repository import next_version, publish_version, stage_version
from fbmr.export.settings import ServingSettings, Target
from fbmr.training.data.prepared import PreparedDataset

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    repository: Path
    version: int
    target: Target
    models: list[str]
    # largest |ONNX - PyTorch| per exported model
    parity: dict[str, float]


def export_run(
    run_dir: Path,
    repository: Path,
    target: Target = Target.cpu,
    settings: ServingSettings | None = None,
    data: PreparedDataset | None = None,
    tolerance: float = onnx_models.PARITY_TOLERANCE,
    progress: bool = True,
) -> ExportReport:
    """Export every model of `run_dir` and publish them as the repository's next version.

    Raises ParityError (and leaves the repository as it was) when any ONNX model cannot be
    loaded or differs from PyTorch by more than `tolerance` on validation inputs.
    """
    settings = settings or ServingSettings()
    run = onnx_models.load_run(run_dir, data)
    version = next_version(repository)
    repository.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the repository (same filesystem, so publishing is renames) but outside it,
    # so a Triton polling the repository never sees a half-built version.
    with tempfile.TemporaryDirectory(prefix=f".{repository.name}.", dir=repository.parent) as tmp:
        onnx_dir, staging = Path(tmp) / "onnx", Path(tmp) / "repository"
        onnx_dir.mkdir()
        files, parity = {}, {}
        for model in tqdm(run.models, desc="export", unit="model", disable=not progress):
            files[model.name] = onnx_dir / f"{model.name}.onnx"
            onnx_models.export_onnx(model, files[model.name])
            parity[model.name] = onnx_models.check_parity(model, files[model.name], tolerance)
            log.info("%s: max |ONNX - PyTorch| = %.2e", model.name, parity[model.name])
        provenance = {
            "run": str(run_dir.resolve()),
            "image_trunk": run.image_trunk,
            "parity_max_abs_diff": parity,
        }
        names = stage_version(run, files, staging, version, target, settings, provenance)
        publish_version(staging, repository, names, version)
    return ExportReport(repository, version, target, names, parity)
