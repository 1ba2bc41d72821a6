"""INT8 encoders for the cpu target, and the accuracy gate they must pass to be published.

On CPU the float32 serving path is already close to bare onnxruntime on the same files, so what is
left to gain is in the arithmetic. onnxruntime's quantisation tooling makes the INT8 files:

- the image encoder statically, in QDQ form: int8 weights per output channel, uint8 activations
  whose ranges are calibrated on a sample of training photos. onnxruntime fuses each
  DequantizeLinear -> Conv -> QuantizeLinear into an int8 kernel (VNNI where the CPU has it);
- the text encoders dynamically: int8 weights, one scale per output column, for every MatMul
  with a constant weight (the sentence encoder's among them), the activations' ranges taken per
  batch at run time, so nothing about token ids needs calibrating. The n-gram lookups and
  everything else stay float32;
- the heads stay float32: they are small, and they make the probabilities.

The tensors and the ensembles do not change, so the facade, the client and the index need nothing.

The gate the INT8 files must pass is `fbmr.export.int8_gate`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from fbmr.core.contract import (
    FUSION_TEXT_ENCODER,
    IMAGE,
    IMAGE_ENCODER,
    IMAGE_HEAD,
    TEXT_ENCODER,
)
from fbmr.core.image import image_pixels
from fbmr.export.onnx_models import RunModels
from fbmr.export.settings import Int8Settings
from fbmr.training.data.prepared import PreparedDataset

log = logging.getLogger(__name__)

TEXT_ENCODERS = (TEXT_ENCODER, FUSION_TEXT_ENCODER)
# the image encoder's operators quantised (see quantize_image_encoder on the ReLUs)
QUANTIZED_IMAGE_OPS = [
    "Conv",
    "Relu",
    "Clip",
    "MaxPool",
    "Add",
    "GlobalAveragePool",
    "MatMul",
    "Gemm",
]
CALIBRATION_BATCH = 8


class _Photos(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime has no type information
    """Batches of uint8 photos for the calibrator, as the served image encoder receives them.
    The calibrator reads them one batch at a time (`set_range`) and folds each batch's ranges
    into the running ones, so its memory is one batch's activations, not the whole sample's."""

    def __init__(self, photos: NDArray[np.uint8]) -> None:
        self._batches = [
            photos[i : i + CALIBRATION_BATCH] for i in range(0, len(photos), CALIBRATION_BATCH)
        ]
        self._next: Iterator[NDArray[np.uint8]] = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
        batch = next(self._next, None)
        return None if batch is None else {IMAGE: batch}


def calibration_photos(
    data: PreparedDataset, run: RunModels, settings: Int8Settings
) -> NDArray[np.uint8]:
    """A random sample of `settings.calibration_photos` training photos (seeded), as uint8
    (N, 3, S, S): the image encoder's served input."""
    train = data.images("train")
    n = min(settings.calibration_photos, len(train))
    chosen = train.sample(n=n, random_state=settings.seed)["image_id"]
    return np.stack([image_pixels(data.image_path(i), run.image_spec) for i in chosen])


@contextmanager
def _prepared(source: Path) -> Iterator[Path]:
    """`source` after the pre-processing onnxruntime's tooling asks for before quantising
    (shape inference and graph folding), in a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        yield prepared


def quantize_image_encoder(source: Path, target: Path, photos: NDArray[np.uint8]) -> None:
    """Static QDQ INT8: per-channel int8 weights, uint8 activations calibrated on `photos`."""
    with _prepared(source) as prepared:
        quantize_static(
            str(prepared),
            str(target),
            _Photos(photos),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # The pixel scaling and normalisation at the graph's start stay float32. The ReLUs
            # (ResNet's Relu, EfficientNet-Lite's ReLU6 as Clip) must be listed: left out, the
            # quantiser puts each convolution's QuantizeLinear before its activation, on the
            # unclipped range (-40..30 where ReLU6 keeps 0..6), so the kept values get a tenth of
            # the 256 levels (Lite0: 69% top-1 agreement with float32 instead of 92%) and every
            # activation runs in float32 between a DequantizeLinear and a QuantizeLinear (1.6x
            # slower). Listed, the clipping becomes the range and Conv+ReLU one int8 kernel.
            op_types_to_quantize=QUANTIZED_IMAGE_OPS,
            # one batch at a time, each batch's ranges folded into the running ones
            extra_options={"CalibStridedMinMax": 1},
        )


def quantize_text_encoder(source: Path, target: Path) -> None:
    """Dynamic INT8: int8 MatMul weights, one scale per output column, activations quantised per
    batch at run time. One scale per whole weight (onnxruntime's default) moved the product
    classifier's top-1 on 1.4% of the real validation listings and cost it 1 point; per column,
    0.4% and 0.2 point, at the same speed."""
    with _prepared(source) as prepared:
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
        )


def quantize_encoders(
    files: dict[str, Path],
    out_dir: Path,
    run: RunModels,
    data: PreparedDataset,
    settings: Int8Settings,
    progress: bool = True,
) -> dict[str, Path]:
    """`files` with the encoders replaced by INT8 files written under `out_dir`."""
    quantized = dict(files)
    for name in tqdm([n for n in files if n != IMAGE_HEAD], desc="int8", disable=not progress):
        target = out_dir / f"{name}.int8.onnx"
        if name == IMAGE_ENCODER:
            photos = calibration_photos(data, run, settings)
            log.info("%s: calibrating on %d training photos", name, len(photos))
            quantize_image_encoder(files[name], target, photos)
        elif name in TEXT_ENCODERS:
            quantize_text_encoder(files[name], target)
        else:
            continue  # heads stay float32
        quantized[name] = target
    return quantized
