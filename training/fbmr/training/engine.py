"""The training loop every stage shares: epochs with tqdm progress, early stopping on validation
top-1, atomic checkpoints, resume after an interruption, optional weight averaging, and the
stage's report (metrics.json, training curves, confusion matrix).

A stage folder holds:
    last.pt        model and optimizer after the latest epoch, and the running weight average
                   (for resume)
    best.pt        model with the best validation top-1 (what later stages and export read); with
                   weight averaging, the best of the models judged: the live ones before it
                   begins, the running averages from then on
    history.json   per-epoch loss and top-1, train and validation
    metrics.json   top-1, top-3 and macro-F1 per split of the best model; written last, so its
                   presence marks the stage as complete
    curves.png, confusion.png
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, f1_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fbmr.core.fileio import atomic_path, atomic_write_json
from fbmr.core.schema import SchemaVersionError
from fbmr.training import plots
from fbmr.training.config import TrainConfig
from fbmr.training.layout import BEST, CONFUSION, CURVES, HISTORY, LAST, METRICS
from fbmr.training.meta import RETRAIN, StageMeta
from fbmr.training.optim import SplitAdam, pretrained_parameters, sparse_parameters

# 2: `meta` a versioned spec (fbmr.training.meta), last.pt's progress fields all present
CHECKPOINT_FORMAT = "fbmr.checkpoint/2"
SPLITS = ("train", "val", "test")


# What the loop trains and judges on: items of model inputs followed by the target.
Samples = Dataset[tuple[torch.Tensor, ...]]
Loader = DataLoader[tuple[torch.Tensor, ...]]
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


# A training loss other than the logits' cross-entropy: (embedding, logits, target, the
# cross-entropy with the settings' label smoothing) -> the batch's loss.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]


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


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    patience: int = 3
    seed: int = 0
    workers: int = 0
    progress: bool = True
    # Training targets put this much probability on the other classes (validation loss, which
    # breaks ties of top-1, is measured without it).
    label_smoothing: float = 0.0
    # From this epoch on, the model judged on validation (and saved as best when it is) is the
    # mean of the weights at the end of every epoch since, stochastic weight averaging; training
    # goes on from the live weights. None: each epoch's live model is judged.
    average_from: int | None = None
    # Learning rate of the pretrained weights being fine-tuned (`optim.pretrained_parameters`),
    # which the stage's rate would wipe out; None: the stage's rate for every parameter.
    pretrained_lr: float | None = None
    # mixup (Zhang et al., 2018): each training batch is mixed with itself shuffled, its first
    # input and its targets alike, by a weight drawn from Beta(mixup, mixup); 0: off
    mixup: float = 0.0


def fit_settings(
    config: TrainConfig, stage: str, *, pretrained: bool = False, epochs: int | None = None
) -> FitSettings:
    """How `stage` ("text", "image" or "fusion") fits, from the run's config: the one place a
    stage's settings are read, so the served models and their out-of-fold refits
    (fbmr.training.stages.crossfit) fit alike. `pretrained`: the model fine-tunes pretrained
    weights (the sentence member in text and fusion, the trunk in image), which keep a rate of
    their own; `epochs` overrides the configured count."""
    if stage not in ("text", "image", "fusion"):
        raise ValueError(f"no fit settings for stage {stage!r}")
    # every stage's `<stage>_epochs`, `_batch_size` and `_lr`; then what is its own
    common = FitSettings(
        epochs=getattr(config, f"{stage}_epochs") if epochs is None else epochs,
        batch_size=getattr(config, f"{stage}_batch_size"),
        lr=getattr(config, f"{stage}_lr"),
        patience=config.patience,
        seed=config.seed,
        progress=config.progress,
        # text batches are tensors in memory: loader workers would only copy them
        workers=0 if stage == "text" else config.workers,
    )
    if stage == "image":
        return replace(
            common,
            label_smoothing=config.image_label_smoothing,
            average_from=config.image_average_from,
            pretrained_lr=config.image_trunk_lr if pretrained else None,
            mixup=config.image_mixup,
        )
    # text and fusion: a pretrained sentence member keeps the rate it was trained at (in fusion
    # with --unfreeze-text)
    sentence_lr = config.text_sentence_lr if pretrained else None
    if stage == "fusion":
        return replace(common, pretrained_lr=sentence_lr)
    return replace(
        common,
        weight_decay=config.text_weight_decay,
        label_smoothing=config.text_label_smoothing,
        average_from=config.text_average_from,
        pretrained_lr=sentence_lr,
    )


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when asked for or, with "auto", when present; else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def make_loader(data: Samples, settings: FitSettings, shuffle: bool, epoch: int = 0) -> Loader:
    # A generator seeded per epoch makes the order of a resumed epoch the same as uninterrupted.
    generator = torch.Generator().manual_seed(settings.seed + epoch)
    return DataLoader(
        data,
        batch_size=settings.batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=settings.workers,
    )


def _to(batch: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


@torch.no_grad()
def predict(
    model: nn.Module, data: Samples, settings: FitSettings, device: torch.device, desc: str = ""
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
    """(embeddings, logits, targets) of a dataset whose items end with the target."""
    model.eval()
    embeddings, logits, targets = [], [], []
    loader = make_loader(data, settings, shuffle=False)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not settings.progress):
        *inputs, target = _to(batch, device)
        embedding, logit = model(*inputs)
        embeddings.append(embedding.float().cpu())
        logits.append(logit.float().cpu())
        targets.append(target.cpu())
    return torch.cat(embeddings).numpy(), torch.cat(logits).numpy(), torch.cat(targets).numpy()


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


def running_mean(
    mean: dict[str, torch.Tensor] | None, count: int, weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The mean of `count` state dicts (`mean`) with `weights` added, as a new dict. Entries that
    are not floating point (lookups of ids) are taken from `weights` as they are."""
    if mean is None:
        return {name: value.detach().clone() for name, value in weights.items()}
    return {
        name: mean[name] + (value.detach() - mean[name]) / (count + 1)
        if value.is_floating_point()
        else value.detach().clone()
        for name, value in weights.items()
    }


def _resume(
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


def _batch_loss(
    objective: Objective | None,
    loss_fn: nn.Module,
    embedding: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    if objective is None:
        loss: torch.Tensor = loss_fn(logits, target)
        return loss
    return objective(embedding, logits, target, loss_fn)


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: SplitAdam,
    loader: Loader,
    device: torch.device,
    desc: str,
    progress: bool = True,
    objective: Objective | None = None,
    mixup: float = 0.0,
) -> tuple[float, float]:
    """One pass over `loader` (items: inputs..., target; model output: embedding, logits);
    returns the mean training loss and top-1. The loss is `loss_fn` of the logits, or what
    `objective` makes of the batch; with `mixup` (see FitSettings), the loss against each of
    the two mixed targets, weighted as they were mixed, and top-1 against the heavier one."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, disable=not progress)
    mixing = torch.distributions.Beta(mixup, mixup) if mixup > 0 else None
    for batch in bar:
        *inputs, target = _to(batch, device)
        weight, other = 1.0, target
        if mixing is not None:
            weight = float(mixing.sample())
            order = torch.randperm(len(target), device=target.device)
            inputs[0] = weight * inputs[0] + (1 - weight) * inputs[0][order]
            other = target[order]
        embedding, logits = model(*inputs)
        loss = _batch_loss(objective, loss_fn, embedding, logits, target)
        if mixing is not None:
            against_other = _batch_loss(objective, loss_fn, embedding, logits, other)
            loss = torch.lerp(against_other, loss, weight)  # weight * loss + (1 - weight) * other
        if weight < 0.5:
            target = other
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's stub leaves it untyped
        optimizer.step()
        total_loss += loss.item() * len(target)
        correct += (logits.argmax(1) == target).sum().item()
        seen += len(target)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", top1=f"{correct / seen:.3f}")
    return total_loss / max(seen, 1), correct / max(seen, 1)


def evaluate(
    model: nn.Module,
    loss_fn: nn.Module,
    data: Samples,
    settings: FitSettings,
    device: torch.device,
) -> tuple[float, float]:
    """The loss and top-1 of `model` on `data`, in evaluation mode."""
    _, logits, targets = predict(model, data, settings, device, "validation")
    loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)))
    return loss, top1(logits, targets)


@torch.no_grad()
def measure_batch_norm(
    model: nn.Module,
    norms: Sequence[nn.modules.batchnorm._BatchNorm],
    batches: Iterable[Sequence[torch.Tensor]],
    most: int | None = None,
) -> int:
    """Set `norms`' statistics (batch norms of `model`) to those of the inputs `batches` give
    `model` (up to `most` samples), as torch.optim.swa_utils.update_bn does; the rest of the
    model runs in eval mode, as served. Returns the number of samples seen."""
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
        norm.train()
    seen = 0
    for inputs in batches:
        model(*inputs)
        seen += len(inputs[0])
        if most is not None and seen >= most:
            break
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return seen


def _update_batch_norm(
    model: nn.Module, train: Samples, settings: FitSettings, device: torch.device
) -> None:
    """Batch-norm statistics of `model`'s current weights, measured over the training samples,
    for the batch norms that train only: a frozen stage's keep the statistics its weights were
    given, and in cached mode are not even run."""
    loader = make_loader(train, settings, shuffle=False)
    measure_batch_norm(model, _trained_norms(model), (_to(b, device)[:-1] for b in loader))


def _trained_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and any(p.requires_grad for p in m.parameters())
    ]


def fit(
    model: nn.Module,
    train: Samples,
    val: Samples,
    stage_dir: Path,
    settings: FitSettings,
    device: torch.device,
    checkpoint_fields: dict[str, object],
    saved: nn.Module | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    objective: Objective | None = None,
) -> list[EpochRecord]:
    """Train `model` (items: inputs..., target; output: embedding, logits) with early stopping,
    resuming from `stage_dir/last.pt` when it exists. `saved` is what checkpoints store (the full
    model when `model` trains only a part of it, such as a head over cached features).
    `objective` replaces the training loss (see `Objective`); `settings.average_from` judges the
    running mean of the weights instead of the live ones (see `FitSettings`)."""
    saved = saved or model
    # An average of weights needs batch-norm statistics of its own: the live model's describe
    # other weights' activations. They are measured again over the training samples before the
    # average is judged (`_update_batch_norm`: one forward pass, no gradients).
    norms = bool(_trained_norms(model))
    stage_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SplitAdam(
        trainable,
        sparse_parameters(model),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        slow=pretrained_parameters(model),
        slow_lr=settings.pretrained_lr,
    )
    loss_fn = nn.CrossEntropyLoss()
    train_loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    state = _resume(
        stage_dir / LAST, saved, optimizer, checkpoint_fields.get("meta"), settings.average_from
    )

    for epoch in range(state.start, settings.epochs):
        if state.bad_epochs >= settings.patience:
            break
        torch.manual_seed(settings.seed + epoch)  # dropout and augmentation, resumable
        loader = make_loader(train, settings, shuffle=True, epoch=epoch)
        desc = f"{stage_dir.name} epoch {epoch}"
        train_loss, train_top1 = train_one_epoch(
            model,
            train_loss_fn,
            optimizer,
            loader,
            device,
            desc,
            settings.progress,
            objective,
            settings.mixup,
        )
        averaging = settings.average_from is not None and epoch >= settings.average_from
        if averaging:
            state.average = running_mean(state.average, state.averaged, saved.state_dict())
            state.averaged += 1
            live = {name: value.clone() for name, value in saved.state_dict().items()}
            saved.load_state_dict(state.average)
            if norms:
                _update_batch_norm(model, train, settings, device)
        val_loss, val_top1 = evaluate(model, loss_fn, val, settings, device)
        judged = {**checkpoint_fields, "model": saved.state_dict(), "epoch": epoch}
        if selection_key(val_top1, val_loss) > selection_key(state.best_top1, state.best_loss):
            state.best_top1, state.best_loss, state.bad_epochs = val_top1, val_loss, 0
            save_checkpoint(stage_dir / BEST, {**judged, "val_top1": val_top1})
        else:
            state.bad_epochs += 1
        if averaging:
            saved.load_state_dict(live)  # training goes on from the live weights
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_top1=train_top1,
            val_loss=val_loss,
            val_top1=val_top1,
            averaged=averaging,
        )
        state.history.append(record)
        tqdm.write(
            f"{desc}: train loss {train_loss:.3f} top-1 {train_top1:.3f} | "
            f"val{' (averaged)' if averaging else ''} loss {val_loss:.3f} top-1 {val_top1:.3f}"
        )
        save_checkpoint(
            stage_dir / LAST,
            {
                **checkpoint_fields,
                "model": saved.state_dict(),
                "epoch": epoch,
                "average_from": settings.average_from,
                "average": state.average,
                "averaged": state.averaged,
                "optimizer": optimizer.state_dict(),
                "history": state.history,
                "best_top1": state.best_top1,
                "best_loss": state.best_loss,
                "bad_epochs": state.bad_epochs,
            },
        )
        atomic_write_json(stage_dir / HISTORY, state.history)
        if on_epoch is not None:
            on_epoch(record)
    saved.load_state_dict(load_checkpoint(stage_dir / BEST)["model"])
    return state.history


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
