"""PNG plots next to the numbers: training curves, confusion matrix, t-SNE of word vectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # the engine draws with this module
    from fbmr.training.metrics import EpochRecord


def training_curves(history: Sequence[EpochRecord], path: Path, title: str) -> None:
    """Loss and top-1 accuracy per epoch, train against validation."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    curves = (
        ("train", "-o", [h["train_loss"] for h in history], [h["train_top1"] for h in history]),
        ("val", "-s", [h["val_loss"] for h in history], [h["val_top1"] for h in history]),
    )
    for split, style, losses, accuracies in curves:
        loss_ax.plot(epochs, losses, style, label=split)
        acc_ax.plot(epochs, accuracies, style, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(
    matrix: NDArray[np.int64], classes: Sequence[str], path: Path, title: str
) -> None:
    """Row-normalised confusion matrix (true class by row), with counts in the cells."""
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i, j in np.ndindex(matrix.shape):
        if matrix[i, j]:
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def word_map(points: NDArray[np.float32], words: Sequence[str], path: Path, title: str) -> None:
    """Words placed at their 2-D t-SNE coordinates."""
    fig, ax = plt.subplots(figsize=(12, 12))
    ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.4)
    for (x, y), word in zip(points, words, strict=True):
        ax.annotate(word, (x, y), fontsize=7, alpha=0.8)
    ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
