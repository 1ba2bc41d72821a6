"""What the fusion stage keeps, judged on validation: its trained stacking weights, or one input
model answering alone (`hold_to_inputs`), and the inputs' own top-1 it is held to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import TensorDataset

from fbmr.training.checkpoints import load_checkpoint, save_checkpoint
from fbmr.training.engine import evaluate
from fbmr.training.layout import BEST
from fbmr.training.metrics import selection_key, top1
from fbmr.training.models import FusionModel
from fbmr.training.stage_settings import FitSettings


def inputs_top1(answers: dict[str, NDArray[np.float32]], labels: torch.Tensor) -> dict[str, float]:
    """Top-1 of the image and text models alone on the fusion samples (photos), the figures the
    fusion model is held to: never worse than the better of the two."""
    target = labels.numpy()
    if not len(target):
        return {}
    return {name: top1(logits, target) for name, logits in answers.items()}


# Stacking weights (text, image, combined) that answer with one input model alone.
INPUTS_ALONE = {"text": (1.0, 0.0, 0.0), "image": (0.0, 1.0, 0.0)}


def hold_to_inputs(
    model: FusionModel,
    trainable: nn.Module,
    val: TensorDataset,
    settings: FitSettings,
    device: torch.device,
    stage_dir: Path,
    alone: dict[str, tuple[float, float, float]],
    by_loss: bool,
) -> tuple[str, dict[str, dict[str, float]]]:
    """Keep the trained stacking weights (and the stack's bias) only if they beat, on validation,
    each input model answering alone (`alone`: its weights, with no bias); else switch to the
    better input and rewrite best.pt.
    The combined head and embedding stay as trained either way. Returns which weights were kept
    ("trained", "text" or "image") and each candidate's validation loss and top-1.

    Weights fit in-sample (`by_loss` False) are judged by top-1, ties broken by the loss: they
    trust the text as far as the training listings, whose text the text model has memorised,
    reward, which can be further than validation does. Weights fit out of fold (`by_loss`) are
    judged by the loss, each input alone at its out-of-fold temperature: the weights were fit to
    minimise exactly that loss on eight times as many photos, and a proper score over every
    photo's probabilities tells a better stack apart where top-1 over about 570 products cannot
    (one product is 0.18 point: on the real sample a stack better by the loss on validation and on
    test, and by 0.7 point of test top-1, lost to text alone by one validation product)."""
    weights, bias = model.head.weights, model.head.bias
    trained_bias = bias.clone()
    loss_fn = nn.CrossEntropyLoss()
    candidates = {"trained": tuple(weights.tolist()), **alone}

    def use(name: str) -> None:
        with torch.no_grad():
            weights.copy_(torch.tensor(candidates[name]))
            bias.copy_(trained_bias if name == "trained" else torch.zeros_like(bias))

    scores: dict[str, dict[str, float]] = {}
    for name in candidates:
        use(name)
        loss, val_top1 = evaluate(trainable, loss_fn, val, settings, device)
        scores[name] = {"loss": loss, "top1": val_top1}

    def key(name: str) -> tuple[float, ...]:
        score = scores[name]
        return (-score["loss"],) if by_loss else selection_key(score["top1"], score["loss"])

    kept = max(candidates, key=key)  # the first of equals: the trained weights win a tie
    use(kept)
    if kept != "trained":
        checkpoint = load_checkpoint(stage_dir / BEST)
        save_checkpoint(stage_dir / BEST, {**checkpoint, "model": model.state_dict()})
    return kept, scores
