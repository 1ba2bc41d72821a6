"""How a stage's models are judged and reported: top-1 (the best model is the one with the best
validation top-1, ties broken by the lower loss), top-3 and macro-F1 per split, and the stage's
report (metrics.json, training curves, confusion matrix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, f1_score

from fbmr.core.fileio import atomic_write_json
from fbmr.training import plots
from fbmr.training.layout import CONFUSION, CURVES, METRICS

# A stage's report (metrics.json): JSON, with figures of the stage's own beside the metrics.
Report = dict[str, Any]
# A split's logits (N, C) and targets (N), as numpy arrays.
Predictions = tuple[NDArray[np.float32], NDArray[np.int64]]


class EpochRecord(TypedDict):
    """One epoch in history.json."""

    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    averaged: bool  # the validation figures are the averaged model's


def top1(logits: NDArray[np.float32], targets: NDArray[np.int64]) -> float:
    """Share of samples whose highest logit is their target (NaN without samples)."""
    return float((logits.argmax(1) == targets).mean()) if len(targets) else float("nan")


def selection_key(accuracy: float, loss: float) -> tuple[float, float]:
    """What picks the best of several models on validation: top-1, ties broken by the lower loss
    (a saturated validation top-1, as on small data, would otherwise keep the first)."""
    return accuracy, -loss


def classification_metrics(
    logits: NDArray[np.float32], targets: NDArray[np.int64], num_classes: int
) -> dict[str, float]:
    top3 = np.argsort(-logits, axis=1)[:, :3]
    predicted = top3[:, 0]
    return {
        "count": len(targets),
        "top1": top1(logits, targets),
        "top3": float((top3 == targets[:, None]).any(axis=1).mean())
        if len(targets)
        else float("nan"),
        "macro_f1": float(
            f1_score(
                targets, predicted, average="macro", labels=range(num_classes), zero_division=0
            )
        ),
    }


def report(
    stage_dir: Path,
    title: str,
    history: list[EpochRecord],
    predictions: dict[str, Predictions],
    classes: tuple[str, ...],
    extra: Report | None = None,
) -> Report:
    """metrics.json (per split: top-1, top-3, macro-F1), curves.png and confusion.png (on the
    test split, or validation when there is no test split)."""
    metrics = {
        split: classification_metrics(logits, targets, len(classes))
        for split, (logits, targets) in predictions.items()
    }
    plots.training_curves(history, stage_dir / CURVES, title)
    shown = "test" if "test" in predictions and len(predictions["test"][1]) else "val"
    logits, targets = predictions[shown]
    matrix = confusion_matrix(targets, logits.argmax(1), labels=range(len(classes)))
    plots.confusion_matrix(matrix, classes, stage_dir / CONFUSION, f"{title}: {shown} split")
    best = max(history, key=lambda h: selection_key(h["val_top1"], h["val_loss"]), default=None)
    result = {
        "stage": stage_dir.name,
        "splits": metrics,
        "best_epoch": best["epoch"] if best is not None else None,
        **(extra or {}),
    }
    atomic_write_json(stage_dir / METRICS, result)
    return result
