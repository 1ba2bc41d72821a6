"""`fbmr export --run RUN --repo model_repository/ --target cpu|gpu`.

The Triton scheduling and INT8 options mirror ServingSettings' and Int8Settings' fields
(`fbmr.core.cli.OptionGroup`): their types and defaults live there.
"""

from __future__ import annotations

import logging
from typing import Any

import typer

from fbmr.core.cli import OptionGroup, ProgressOption, RepoOption, RunOption, fail, with_options
from fbmr.core.contract import DEFAULT_MODEL_REPOSITORY
from fbmr.export.settings import Int8Settings, Precision, ServingSettings, Target

SERVING = OptionGroup(ServingSettings, {
    "max_batch_size": "Largest batch Triton forms.",
    "max_queue_delay_us": "How long a request waits for others to batch with.",
    "max_queue_size": "Requests queued per model before Triton refuses new ones.",
    "instances": "Model instances per model.",
    "intra_op_threads": "cpu target: onnxruntime threads per instance (0: its default).",
    "spinning": "cpu target: idle onnxruntime threads spin (fast alone, slow shared).",
    "row_slices": "cpu target: a batch's rows run in this many 1-thread slices (0: a core each, "
    "1: off).",
    "tensorrt_fp16": "gpu target: TensorRT FP16 via onnxruntime, with an engine cache.",
}, panel="Triton scheduling")  # fmt: skip
INT8 = OptionGroup(Int8Settings, {
    "calibration_photos": "Training photos, drawn at random, the image encoder is calibrated on.",
    "seed": "Seed of that draw.",
    "min_agreement": "Gate: least share of INT8 top-1 equal to float32's.",
    "max_accuracy_drop": "Gate: most accuracy lost per pipeline (0.005: 0.5 point).",
}, panel="--precision int8", names={"seed": "calibration_seed"})  # fmt: skip


@with_options(SERVING, INT8)
def export(
    run: RunOption,
    repo: RepoOption = DEFAULT_MODEL_REPOSITORY,
    target: Target = typer.Option(
        Target.cpu,
        help="cpu: python backend + onnxruntime (pip tritonserver); gpu: onnxruntime backend.",
    ),
    precision: Precision = typer.Option(
        Precision.float32,
        help="cpu target: int8 quantises the encoders (static QDQ image, dynamic text) and "
        "publishes them only if they pass the accuracy gate on the validation split.",
    ),
    progress: ProgressOption = True,
    verbose: bool = typer.Option(
        False, "--verbose", help="Also show the ONNX exporter's and quantiser's own log lines."
    ),
    **options: Any,
) -> None:
    """Export a trained run to ONNX, check parity against PyTorch, and publish it as the next
    version of a Triton model repository with its ensembles."""
    from fbmr.export.export import export_run
    from fbmr.export.onnx_files import ExportRefused

    # the export's own steps; the exporter's and quantiser's internals only when they warn
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("fbmr").setLevel(logging.INFO)
    if not (run / "fusion" / "best.pt").is_file():
        fail(f"{run} has no trained fusion stage; run `fbmr train` first")
    if precision is Precision.int8 and target is not Target.cpu:
        raise typer.BadParameter(
            "--precision int8 is for the cpu target; on GPU use --tensorrt-fp16 (docs/results.md)"
        )
    serving = SERVING.values(options)
    try:
        settings = ServingSettings(
            **serving,
            preferred_batch_sizes=tuple(
                b for b in ServingSettings.preferred_batch_sizes if b <= serving["max_batch_size"]
            ),
        )
        int8 = Int8Settings(**INT8.values(options))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        report = export_run(
            run, repo, target, settings, progress=progress, precision=precision, int8=int8
        )
    except ExportRefused as err:
        fail(f"export refused: {err}")
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
