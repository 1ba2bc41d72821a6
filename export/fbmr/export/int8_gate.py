"""The accuracy gate INT8 encoders (`fbmr.export.quantize`) must pass to be published.

The gate is accuracy, not parity (an INT8 model is not meant to match float32 to 1e-4): on the
validation split, the INT8 pipelines (image, text, and the two encoders into the fusion head) must
pick the float32 pipelines' top-1 class for at least `min_agreement` of the listings and lose at
most `max_accuracy_drop` of accuracy. An encoder that misses it alone stays float32; the figures
are written into `fbmr.json`; an export where no encoder passes is refused with the figures, and
the repository is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tqdm import tqdm

from fbmr.core.contract import (
    FUSION_HEAD,
    IMAGE,
    IMAGE_EMBEDDING,
    IMAGE_ENCODER,
    IMAGE_HEAD,
    LOGITS,
    TEXT_EMBEDDING,
    TEXT_ENCODER,
    TEXT_HEAD,
    TOKEN_IDS,
)
from fbmr.core.image import image_pixels
from fbmr.export.onnx_files import ExportRefused
from fbmr.export.onnx_models import RunModels
from fbmr.export.settings import Int8Settings
from fbmr.training.data.prepared import PreparedDataset

log = logging.getLogger(__name__)

BATCH = 32


class AccuracyGateError(ExportRefused):
    """The INT8 models lose more accuracy, or agree less with float32, than the gate allows."""


@dataclass(frozen=True)
class GateFigures:
    """One pipeline's INT8 figures on the validation split."""

    listings: int
    agreement: float  # share of listings whose INT8 top-1 is float32's
    accuracy_float32: float
    accuracy_int8: float

    @property
    def drop(self) -> float:
        return self.accuracy_float32 - self.accuracy_int8

    def misses(self, settings: Int8Settings) -> list[str]:
        missed = []
        if self.agreement < settings.min_agreement:
            missed.append(f"agreement {self.agreement:.2%} < {settings.min_agreement:.0%}")
        if self.drop > settings.max_accuracy_drop:
            missed.append(
                f"accuracy {self.accuracy_int8:.2%} vs {self.accuracy_float32:.2%} float32 "
                f"(drop {self.drop:.2%} > {settings.max_accuracy_drop:.2%})"
            )
        return missed


class _Pipelines:
    """The served pipelines run in-process on one set of files (float32 or INT8)."""

    def __init__(self, files: dict[str, Path], product_text_encoder: str) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in files.items()
        }
        self.product_text_encoder = product_text_encoder

    def run(self, name: str, output: str, **feeds: NDArray[np.generic]) -> NDArray[np.float32]:
        """One model's `output` (the pipelines' outputs are all float32)."""
        out: NDArray[np.float32] = self.sessions[name].run([output], feeds)[0]
        return out

    def top1(
        self, photos: NDArray[np.uint8], token_ids: NDArray[np.int64]
    ) -> dict[str, NDArray[np.intp]]:
        """Top-1 class per pipeline for aligned (photo, text) listings."""
        image = self.run(IMAGE_ENCODER, IMAGE_EMBEDDING, **{IMAGE: photos})
        text = self.run(TEXT_ENCODER, TEXT_EMBEDDING, **{TOKEN_IDS: token_ids})
        product_text = text
        if self.product_text_encoder != TEXT_ENCODER:
            product_text = self.run(
                self.product_text_encoder, TEXT_EMBEDDING, **{TOKEN_IDS: token_ids}
            )
        logits = {
            "image": self.run(IMAGE_HEAD, LOGITS, **{IMAGE_EMBEDDING: image}),
            "text": self.run(TEXT_HEAD, LOGITS, **{TEXT_EMBEDDING: text}),
            "combined": self.run(
                FUSION_HEAD, LOGITS, **{IMAGE_EMBEDDING: image, TEXT_EMBEDDING: product_text}
            ),
        }
        return {kind: values.argmax(axis=1) for kind, values in logits.items()}


def _listings(
    data: PreparedDataset, run: RunModels, split: str
) -> Iterator[tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]]:
    """Batches of (photos, token ids, labels): every photo of `split` with its listing's text."""
    products = data.products(split).set_index("product_id")
    images = data.images(split)
    for start in range(0, len(images), BATCH):
        rows = images.iloc[start : start + BATCH]
        ids = rows["image_id"]
        photos = np.stack([image_pixels(data.image_path(i), run.image_spec) for i in ids])
        texts = [data.text(products.loc[p]) for p in rows["product_id"]]
        labels = rows["label_id"].to_numpy(dtype=np.int64)
        yield photos, run.tokenizer.encode_batch(texts), labels


class _Evaluation:
    """The float32 pipelines' top-1 on every photo of a split, computed once, against which
    sets of INT8 files are measured."""

    def __init__(
        self,
        float_files: dict[str, Path],
        run: RunModels,
        data: PreparedDataset,
        split: str,
        progress: bool,
    ) -> None:
        self.split, self.run, self.progress = split, run, progress
        self.batches = list(_listings(data, run, split))
        if not self.batches:
            raise AccuracyGateError(f"the {split} split has no photos to run the INT8 gate on")
        reference = _Pipelines(float_files, run.product_text_encoder)
        self.expected = [reference.top1(p, t) for p, t, _ in self.batches]

    def figures(self, files: dict[str, Path]) -> dict[str, GateFigures]:
        candidate = _Pipelines(files, self.run.product_text_encoder)
        agree: dict[str, int] = {}
        right_float: dict[str, int] = {}
        right_int8: dict[str, int] = {}
        total = 0
        batches = tqdm(
            zip(self.batches, self.expected, strict=True),
            total=len(self.batches),
            desc=f"int8 gate ({self.split})",
            disable=not self.progress,
        )
        for (photos, token_ids, labels), expected in batches:
            got = candidate.top1(photos, token_ids)
            for kind in expected:
                agree[kind] = agree.get(kind, 0) + int((expected[kind] == got[kind]).sum())
                right_float[kind] = right_float.get(kind, 0) + int((expected[kind] == labels).sum())
                right_int8[kind] = right_int8.get(kind, 0) + int((got[kind] == labels).sum())
            total += len(labels)
        return {
            kind: GateFigures(
                total, agree[kind] / total, right_float[kind] / total, right_int8[kind] / total
            )
            for kind in agree
        }


def _misses(figures: dict[str, GateFigures], settings: Int8Settings) -> str:
    """Every miss of the gate in words ("" when there is none)."""
    missed = {kind: f.misses(settings) for kind, f in figures.items() if f.misses(settings)}
    return "; ".join(f"{kind}: {', '.join(m)}" for kind, m in missed.items())


def int8_figures(
    float_files: dict[str, Path],
    int8_files: dict[str, Path],
    run: RunModels,
    data: PreparedDataset,
    split: str = "val",
    progress: bool = True,
) -> dict[str, GateFigures]:
    """The gate's figures per pipeline (image, text, combined) on any split, refusing nothing:
    what `bench/int8_accuracy.py` reports for the test split too."""
    return _Evaluation(float_files, run, data, split, progress).figures(int8_files)


@dataclass
class Int8Choice:
    """The files to publish, their gate figures, and each encoder kept float32 with why."""

    files: dict[str, Path]
    figures: dict[str, GateFigures]
    kept_float32: dict[str, str]


def choose_int8(
    float_files: dict[str, Path],
    int8_files: dict[str, Path],
    run: RunModels,
    data: PreparedDataset,
    settings: Int8Settings,
    progress: bool = True,
) -> Int8Choice:
    """The INT8 encoders that pass the gate on the validation split, the others kept float32
    ("anything that loses accuracy stays float32"): all of them when they pass together, else
    those that pass alone (together, or the best one alone when together they miss). Raises
    AccuracyGateError, with every figure, when no encoder passes."""
    evaluation = _Evaluation(float_files, run, data, "val", progress)
    figures = evaluation.figures(int8_files)
    if not _misses(figures, settings):
        return Int8Choice(int8_files, figures, {})
    quantized = [name for name in int8_files if int8_files[name] != float_files[name]]
    alone = {
        name: evaluation.figures({**float_files, name: int8_files[name]}) for name in quantized
    }
    kept = {name: _misses(f, settings) for name, f in alone.items() if _misses(f, settings)}
    passing = [name for name in quantized if name not in kept]
    total = next(iter(figures.values())).listings
    if not passing:
        detail = "; ".join(f"{name} in INT8: {why}" for name, why in kept.items())
        raise AccuracyGateError(f"INT8 refused on {total} val listings: {detail}")
    chosen = {**float_files, **{name: int8_files[name] for name in passing}}
    together = evaluation.figures(chosen) if len(passing) > 1 else alone[passing[0]]
    if missed := _misses(together, settings):
        best = max(passing, key=lambda n: min(f.agreement for f in alone[n].values()))
        for name in passing:
            if name != best:
                kept[name] = f"passes alone, not with the others ({missed})"
        chosen, together = {**float_files, best: int8_files[best]}, alone[best]
    for name, why in kept.items():
        log.warning("%s stays float32: in INT8 %s", name, why)
    return Int8Choice(chosen, together, kept)


def int8_provenance(
    settings: Int8Settings, choice: Int8Choice, quantized: list[str]
) -> dict[str, Any]:
    """What `fbmr.json` records about an INT8 export: how each model was made and the gate."""
    figures = choice.figures
    return {
        "kept_float32": choice.kept_float32,
        "quantized": {
            name: (
                "static QDQ: int8 weights per channel, uint8 activations (MinMax calibration)"
                if name == IMAGE_ENCODER
                else "dynamic: int8 MatMul weights per output column, activations per batch"
            )
            for name in quantized
        },
        "calibration": {
            "split": "train",
            "photos": settings.calibration_photos,
            "seed": settings.seed,
        },
        "gate": {
            "split": "val",
            "min_agreement": settings.min_agreement,
            "max_accuracy_drop": settings.max_accuracy_drop,
            **{kind: {**asdict(f), "drop": f.drop} for kind, f in figures.items()},
        },
    }
