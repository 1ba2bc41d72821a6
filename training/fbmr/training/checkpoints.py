"""fbmr checkpoints: what every stage's last.pt and best.pt hold (`stage_fields`: the stage, the
run's settings, the classes in logit order, the model's shape), written atomically and read back
as tensors and plain data only, refused when written in another format; and where training
stands between epochs (`TrainState`), which last.pt saves and `resume` restores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fbmr.core.fileio import atomic_path
from fbmr.core.schema import SchemaVersionError
from fbmr.training.config import TrainConfig
from fbmr.training.meta import RETRAIN, StageMeta
from fbmr.training.metrics import EpochRecord
from fbmr.training.optim import SplitAdam

# 2: `meta` a versioned spec (fbmr.training.meta), last.pt's progress fields all present
CHECKPOINT_FORMAT = "fbmr.checkpoint/2"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by this module; tensors and plain data only (weights_only)."""
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if not isinstance(found, str) or not found.startswith("fbmr.checkpoint/"):
        raise ValueError(f"{path} is not an fbmr checkpoint")
    if found != CHECKPOINT_FORMAT:
        raise SchemaVersionError(
            f"{path} is in checkpoint format {found!r}; this fbmr reads {CHECKPOINT_FORMAT!r}: "
            f"{RETRAIN}"
        )
    return checkpoint


def stage_fields(
    stage: str, config: TrainConfig, classes: Sequence[str], meta: StageMeta
) -> dict[str, object]:
    """What every checkpoint of a stage records besides its weights and progress: the stage,
    the run's settings, the class names in logit order and its model's shape (`meta`)."""
    return {
        "stage": stage,
        "config": config.to_dict(),
        "classes": list(classes),
        "meta": meta.to_dict(),
    }


def save_checkpoint(path: Path, fields: dict[str, object]) -> None:
    """An fbmr checkpoint (tensors and plain data), written atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **fields}, tmp)


@dataclass
class TrainState:
    """Where training stands between epochs: what last.pt saves and a resumed run restores."""

    history: list[EpochRecord] = field(default_factory=list)
    best_top1: float = -1.0
    best_loss: float = float("inf")  # validation loss of the best epoch: breaks ties of top-1
    bad_epochs: int = 0
    start: int = 0  # the next epoch to run
    average: dict[str, torch.Tensor] | None = None  # the running mean of the weights, if averaging
    averaged: int = 0  # how many epochs' weights `average` holds


def resume(
    path: Path, saved: nn.Module, optimizer: SplitAdam, meta: object, average_from: int | None
) -> TrainState:
    """The state a stage left in `path` (last.pt), loaded into `saved` and `optimizer`; a
    fresh state when there is no such file."""
    if not path.is_file():
        return TrainState()
    last = load_checkpoint(path)
    if last.get("meta") != meta:  # none when `fit` ran outside a stage
        raise ValueError(
            f"{path} was written by a model of another shape ({last.get('meta')}); "
            "resume with the same settings, or retrain the stage with --force"
        )
    if last["average_from"] != average_from:
        raise ValueError(
            f"{path} was trained with weight averaging from epoch {last['average_from']}, "
            f"not {average_from}; resume with the same settings, or retrain the stage with --force"
        )
    saved.load_state_dict(last["model"])
    optimizer.load_state_dict(last["optimizer"])
    average = last["average"]
    if average is not None:
        # checkpoints load onto the CPU; the average stays beside the weights it follows
        here = saved.state_dict()
        average = {name: value.to(here[name].device) for name, value in average.items()}
    tqdm.write(f"{path.parent.name}: resuming after epoch {last['epoch']}")
    return TrainState(
        last["history"],
        last["best_top1"],
        last["best_loss"],
        last["bad_epochs"],
        last["epoch"] + 1,
        average,
        last["averaged"],
    )
