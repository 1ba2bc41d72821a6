"""The ONNX files of the trained models: each written (`export_onnx`: opset OPSET, a dynamic
batch axis, identical constants stored once, no build paths inside) and held to PyTorch's
outputs before anything is published (`check_parity`, PARITY_TOLERANCE); `toolchain` names the
libraries that wrote and checked them. A model that fails is refused (`ParityError`, an
`ExportRefused`) and the repository is left as it was."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from onnx_ir.passes.common import DeduplicateHashedInitializersPass

from fbmr.core.artifacts import Toolchain
from fbmr.export.onnx_models import OnnxModel

log = logging.getLogger(__name__)

OPSET = 18
PARITY_TOLERANCE = 1e-4


class ExportRefused(RuntimeError):
    """The export's checks refused the models; nothing was written to the repository."""


class ParityError(ExportRefused):
    """An ONNX model's outputs differ from PyTorch's beyond the tolerance."""


def toolchain() -> Toolchain:
    """The libraries and opset `export_onnx` and `check_parity` write and check files with."""
    return Toolchain(
        torch=torch.__version__, onnx=onnx.__version__, onnxruntime=ort.__version__, opset=OPSET
    )


STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata the exporter writes


def export_onnx(model: OnnxModel, path: Path) -> None:
    """Write one model as ONNX (single file, dynamic batch axis) and check it with onnx.

    Identical constants are stored once: the text ensemble's members reading the same view hold
    the same n-gram row lookup (8 MB each) and IDF weights, which the exporter writes per member
    (on the real sample the text encoder is 93 MB instead of 111)."""
    examples = tuple(torch.from_numpy(x) for x in model.examples)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        # Models with two inputs share the one batch Dim, which the exporter reports as renamed.
        warnings.filterwarnings("ignore", message="# The axis name: batch will not be used")
        program = torch.onnx.export(
            model.module,
            examples,
            input_names=[t.name for t in model.inputs],
            output_names=[t.name for t in model.outputs],
            dynamic_shapes=tuple({0: batch} for _ in examples),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:  # only without dynamo=True
        raise RuntimeError(f"{model.name}: the ONNX exporter returned no program")
    # The pass hashes each constant's buffer as it lies, which fails for a strided view (a
    # transposed or sliced weight, as the sentence encoder's position table): laid out afresh.
    for graph in program.model.graphs():
        for value in graph.initializers.values():
            array = value.const_value.numpy() if value.const_value is not None else None
            if array is not None and not array.flags.c_contiguous:
                value.const_value = ir.Tensor(np.ascontiguousarray(array), name=value.name)
    # by content, whatever the size (the pass leaves tensors over 1,024 elements alone by default)
    DeduplicateHashedInitializersPass(size_limit=2**62)(program.model)
    # The exporter notes each node's Python stack trace: the build machine's absolute paths and
    # line numbers, which would ship in every model and make the same model's bytes differ
    # with where the code was checked out.
    for graph in program.model.graphs():
        for node in graph:
            node.metadata_props.pop(STACK_TRACE, None)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


@torch.no_grad()
def check_parity(model: OnnxModel, path: Path, tolerance: float = PARITY_TOLERANCE) -> float:
    """The largest absolute difference between onnxruntime's and PyTorch's outputs on the parity
    inputs; raises ParityError beyond `tolerance` (times the output's largest value where that is
    above 1), or when the file is not a loadable model."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ParityError(f"{model.name}: {path} cannot be loaded by onnxruntime: {err}") from None
    worst = 0.0
    # The whole batch, then a single example: the batch axis must really be dynamic.
    for examples in (model.examples, [x[:1] for x in model.examples]):
        worst = max(worst, _max_difference(model, session, examples, tolerance))
    return worst


def _max_difference(
    model: OnnxModel,
    session: ort.InferenceSession,
    examples: list[NDArray[np.generic]],
    tolerance: float,
) -> float:
    feeds = {t.name: x for t, x in zip(model.inputs, examples, strict=True)}
    try:
        got = session.run([t.name for t in model.outputs], feeds)
    except Exception as err:
        raise ParityError(f"{model.name}: onnxruntime cannot run it: {err}") from None
    expected = model.module(*(torch.from_numpy(x) for x in examples))
    expected = expected if isinstance(expected, tuple) else (expected,)
    worst = 0.0
    for spec, onnx_out, torch_out in zip(model.outputs, got, expected, strict=True):
        if onnx_out.shape != tuple(torch_out.shape):
            raise ParityError(
                f"{model.name}.{spec.name}: shape {onnx_out.shape} in ONNX, "
                f"{tuple(torch_out.shape)} in PyTorch"
            )
        reference = torch_out.numpy()
        diff = float(np.max(np.abs(onnx_out - reference))) if onnx_out.size else 0.0
        # Absolute for outputs within +-1; beyond, relative to the output's largest value: two
        # correct float32 programs summing in different orders differ by about 1e-7 of the
        # magnitude (a random-weight ResNet-50's embeddings reach the hundreds).
        scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
        if not diff <= tolerance * scale:
            raise ParityError(
                f"{model.name}.{spec.name}: ONNX differs from PyTorch by {diff:.3g} "
                f"(tolerance {tolerance:g} x {scale:.3g}, the output's largest value or 1); "
                "refusing to write the repository"
            )
        worst = max(worst, diff)
    return worst
