"""`fbmr export RUN_DIR --repo model_repository/ --target cpu|gpu`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fbmr.core.contract import DEFAULT_MODEL_REPOSITORY
from fbmr.export.settings import ServingSettings, Target

_D = ServingSettings()


def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by `fbmr train`."),
    repo: Path = typer.Option(DEFAULT_MODEL_REPOSITORY, help="Triton model repository."),
    target: Target = typer.Option(
        Target.cpu,
        help="cpu: python backend + onnxruntime (pip tritonserver); gpu: onnxruntime backend.",
    ),
    max_batch_size: int = typer.Option(_D.max_batch_size, help="Largest batch Triton forms."),
    max_queue_delay_us: int = typer.Option(
        _D.max_queue_delay_us, help="How long a request waits for others to batch with."
    ),
    max_queue_size: int = typer.Option(
        _D.max_queue_size, help="Requests queued per model before Triton refuses new ones."
    ),
    instances: int = typer.Option(_D.instances, help="Model instances per model."),
    intra_op_threads: int = typer.Option(
        _D.intra_op_threads, help="cpu target: onnxruntime threads per instance (0: its default)."
    ),
    spinning: bool = typer.Option(
        _D.spinning, help="cpu target: idle onnxruntime threads spin (fast alone, slow shared)."
    ),
    tensorrt_fp16: bool = typer.Option(
        False, help="gpu target: TensorRT FP16 via onnxruntime, with an engine cache."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Export a trained run to ONNX, check parity against PyTorch, and publish it as the next
    version of a Triton model repository with its ensembles."""
    from fbmr.export.export import export_run
    from fbmr.export.onnx_models import ParityError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (run_dir / "fusion" / "best.pt").is_file():
        raise typer.BadParameter(f"{run_dir} has no trained fusion stage; run `fbmr train` first")
    try:
        settings = ServingSettings(
            max_batch_size=max_batch_size,
            preferred_batch_sizes=tuple(b for b in _D.preferred_batch_sizes if b <= max_batch_size),
            max_queue_delay_us=max_queue_delay_us,
            max_queue_size=max_queue_size,
            instances=instances,
            intra_op_threads=intra_op_threads,
            spinning=spinning,
            tensorrt_fp16=tensorrt_fp16,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        report = export_run(run_dir, repo, target, settings, progress=progress)
    except ParityError as err:
        typer.echo(f"export refused: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{repo}: version {report.version} ({target.value} target)")
    for name in report.models:
        diff = report.parity.get(name)
        typer.echo(f"  {name}" + (f"  parity max |diff| {diff:.1e}" if diff is not None else ""))
