"""The training loop every stage shares: epochs with tqdm progress, early stopping on validation
top-1, atomic checkpoints and resume after an interruption (`fbmr.training.checkpoints`),
optional weight averaging (`fbmr.training.averaging`); the stage's report (metrics.json,
training curves, confusion matrix) is `fbmr.training.metrics`, its settings
`fbmr.training.stage_settings`.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fbmr.core.fileio import atomic_write_json
from fbmr.training.averaging import measure_batch_norm, running_mean, trained_norms
from fbmr.training.checkpoints import load_checkpoint, resume, save_checkpoint
from fbmr.training.layout import BEST, HISTORY, LAST
from fbmr.training.metrics import EpochRecord, selection_key, top1
from fbmr.training.optim import SplitAdam, pretrained_parameters, sparse_parameters
from fbmr.training.stage_settings import FitSettings

SPLITS = ("train", "val", "test")


# What the loop trains and judges on: items of model inputs followed by the target.
Samples = Dataset[tuple[torch.Tensor, ...]]
Loader = DataLoader[tuple[torch.Tensor, ...]]


# A training loss other than the logits' cross-entropy: (embedding, logits, target, the
# cross-entropy with the settings' label smoothing) -> the batch's loss.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]


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


def _update_batch_norm(
    model: nn.Module, train: Samples, settings: FitSettings, device: torch.device
) -> None:
    """Batch-norm statistics of `model`'s current weights, measured over the training samples,
    for the batch norms that train only: a frozen stage's keep the statistics its weights were
    given, and in cached mode are not even run."""
    loader = make_loader(train, settings, shuffle=False)
    measure_batch_norm(model, trained_norms(model), (_to(b, device)[:-1] for b in loader))


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
    norms = bool(trained_norms(model))
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
    state = resume(
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
