"""What `fbmr export` is asked for: the repository target and Triton's scheduling settings.

Apart from the repository module (which imports the models, and so torch) so that the CLI can
declare its options without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Target(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


class Precision(StrEnum):
    float32 = "float32"
    int8 = "int8"  # cpu target: INT8 encoders, gated by accuracy (fbmr.export.quantize)


@dataclass(frozen=True)
class Int8Settings:
    """How the INT8 encoders are made and what accuracy they must keep."""

    # training photos the image encoder's activation ranges are calibrated on, drawn at random
    calibration_photos: int = 256
    seed: int = 0
    # on the validation split: share of listings whose INT8 top-1 is float32's, and the most
    # accuracy (a fraction: 0.005 is half a point) each pipeline may lose
    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.005

    def __post_init__(self) -> None:
        if self.calibration_photos < 1:
            raise ValueError("calibration_photos must be at least 1")
        if not 0 <= self.min_agreement <= 1 or not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError("min_agreement and max_accuracy_drop are fractions in 0..1")


@dataclass(frozen=True)
class ServingSettings:
    """Triton scheduling settings written into every composing model's config."""

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    # How long a request may wait for others to form a batch: latency traded for throughput.
    # Each step of an ensemble waits it, so a lone request pays it once per step. 0.5 ms against
    # the earlier 2: Triton direct on the cpu target 3 ms faster at 1 client (p50), no slower at
    # 8; 0 lost throughput and blew the tail up at 8 (docs/results.md, "The batching delay").
    max_queue_delay_us: int = 500
    # A bounded queue: past it Triton refuses at once (the facade answers 503) instead of
    # letting latency grow without limit under overload.
    max_queue_size: int = 128
    queue_timeout_us: int = 10_000_000
    instances: int = 1
    # cpu target: onnxruntime threads per instance (0 lets onnxruntime choose), and whether idle
    # threads spin (off: several models' pools share the cores; see triton_python_model.py).
    intra_op_threads: int = 0
    spinning: bool = False
    # cpu target: a batch's rows cut into this many slices run at once, one thread each (0: one
    # per core, 1: off); a single row still runs on the whole pool (see triton_python_model.py).
    # Off by default: with two instances it buys throughput at the cost of the tail (results.md).
    row_slices: int = 1
    # gpu target: TensorRT FP16 through onnxruntime's TensorRT execution provider.
    tensorrt_fp16: bool = False
    tensorrt_cache: str = "/tmp/fbmr-trt-cache"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if any(not 1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise ValueError(
                f"preferred batch sizes {self.preferred_batch_sizes} must lie in "
                f"1..max_batch_size ({self.max_batch_size})"
            )
        if self.row_slices < 0:
            raise ValueError("row_slices must be 0 (one per core) or more")
        if self.instances < 1 or self.max_queue_size < 1:
            raise ValueError("instances and max_queue_size must be at least 1")
