"""`fbmr export RUN_DIR --repo model_repository/ --target cpu|gpu`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fbmr.core.contract import DEFAULT_MODEL_REPOSITORY
from fbmr.export.settings import Int8Settings, Precision, ServingSettings, Target

_D = ServingSettings()
_Q = Int8Settings()


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
    precision: Precision = typer.Option(
        Precision.float32,
        help="cpu target: int8 quantises the encoders (static QDQ image, dynamic text) and "
        "publishes them only if they pass the accuracy gate on the validation split.",
    ),
    calibration_photos: int = typer.Option(
        _Q.calibration_photos,
        help="int8: training photos, drawn at random, the image encoder is calibrated on.",
    ),
    calibration_seed: int = typer.Option(_Q.seed, help="int8: seed of that draw."),
    min_agreement: float = typer.Option(
        _Q.min_agreement, help="int8 gate: least share of INT8 top-1 equal to float32's."
    ),
    max_accuracy_drop: float = typer.Option(
        _Q.max_accuracy_drop, help="int8 gate: most accuracy lost per pipeline (0.005: 0.5 point)."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
    verbose: bool = typer.Option(
        False, "--verbose", help="Also show the ONNX exporter's and quantiser's own log lines."
    ),
) -> None:
    """Export a trained run to ONNX, check parity against PyTorch, and publish it as the next
    version of a Triton model repository with its ensembles."""
    from fbmr.export.export import export_run
    from fbmr.export.onnx_models import ExportRefused

    # the export's own steps; the exporter's and quantiser's internals only when they warn
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("fbmr").setLevel(logging.INFO)
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
        int8 = Int8Settings(calibration_photos, calibration_seed, min_agreement, max_accuracy_drop)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if precision is Precision.int8 and target is not Target.cpu:
        raise typer.BadParameter(
            "--precision int8 is for the cpu target; on GPU use --tensorrt-fp16 (docs/results.md)"
        )
    try:
        report = export_run(
            run_dir, repo, target, settings, progress=progress, precision=precision, int8=int8
        )
    except ExportRefused as err:
        typer.echo(f"export refused: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{repo}: version {report.version} ({target.value} target, {precision.value})")
    for name in report.models:
        diff = report.parity.get(name)
        typer.echo(f"  {name}" + (f"  parity max |diff| {diff:.1e}" if diff is not None else ""))
    for name, why in report.kept_float32.items():
        typer.echo(f"  {name} stays float32: in INT8 {why}")
    for kind, figures in report.gate.items():
        typer.echo(
            f"  int8 {kind}: top-1 agreement {figures.agreement:.2%}, accuracy "
            f"{figures.accuracy_int8:.2%} (float32 {figures.accuracy_float32:.2%}) "
            f"on {figures.listings} validation listings"
        )
