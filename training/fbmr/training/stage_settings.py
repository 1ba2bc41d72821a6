"""How each stage fits (`FitSettings`), read from the run's config in one place (`fit_settings`),
so the served models and their out-of-fold refits fit alike."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fbmr.training.config import TrainConfig


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
