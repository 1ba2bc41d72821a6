"""How far the fusion head trusts each input: temperature scaling of the text and image models,
then the weights of their calibrated log-probabilities, all fit on out-of-fold logits (predictions
for listings the models producing them did not see; fbmr.training.stages.crossfit).

The stacked fusion logits are t * text_logits + i * image_logits + bias (+ c * the combined
head's). A temperature T scales logits to x / T, and log_softmax(x / T) differs from x / T only
by a constant per row, so weights a and b on the calibrated log-probabilities are the stacking
weights t = a / T_text and i = b / T_image: the fit below gives the fusion head's weights
directly, and the temperatures say how over- or under-confident each input is on its own.

The bias, one per class and fit with the weights, moves the stack's prior between classes: where
the two inputs together over- or under-call a category on listings they did not see, the bias
evens it out. A constant per class commutes with log_softmax, so it is the same on logits and on
log-probabilities. On the real sample's out-of-fold answers it lowered the validation loss of
three runs' stacks, and lifted top-1 per listing on validation and test (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

STEPS = 200


def _minimise(parameters: list[torch.Tensor], loss: Callable[[], torch.Tensor]) -> None:
    """Minimise `loss()` (a closure over `parameters`) with L-BFGS: a handful of scalars over
    logits held in memory, deterministic and done in well under a second."""
    optimizer = torch.optim.LBFGS(parameters, lr=0.5, max_iter=STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss()
        value.backward()  # type: ignore[no-untyped-call]
        return value

    optimizer.step(closure)  # type: ignore[no-untyped-call]


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(logits, targets))


def fit_temperature(logits: NDArray[np.float32], targets: NDArray[np.int64]) -> float:
    """The temperature T that minimises the negative log-likelihood of logits / T."""
    x = torch.from_numpy(np.array(logits, dtype=np.float64))
    y = torch.from_numpy(np.array(targets, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _minimise([log_t], lambda: nn.functional.cross_entropy(x / log_t.exp(), y))
    return float(log_t.detach().exp())


@dataclass(frozen=True)
class Stacking:
    """The stacking weights (`text`, `image`: on the raw logits, the fusion head's t and i) and
    its bias per class (centred on 0), the inputs' temperatures, and the negative log-likelihood
    and top-1 of each input alone (calibrated) and of the stack, on the logits they were fit
    on."""

    text: float
    image: float
    bias: list[float]
    text_temperature: float
    image_temperature: float
    nll: dict[str, float]
    top1: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def fit_stacking(
    text_logits: NDArray[np.float32],
    image_logits: NDArray[np.float32],
    targets: NDArray[np.int64],
    bias: bool = True,
) -> Stacking:
    """Temperatures of each input, then non-negative weights of their calibrated
    log-probabilities and a bias per class that minimise the stack's negative log-likelihood
    (module docstring); without `bias`, the weights alone (the stack as it was first fit)."""
    y = torch.from_numpy(np.array(targets, dtype=np.int64))
    temperatures = [fit_temperature(x, targets) for x in (text_logits, image_logits)]
    text, image = (
        torch.log_softmax(torch.from_numpy(np.array(x, dtype=np.float64)) / t, dim=1)
        for x, t in zip((text_logits, image_logits), temperatures, strict=True)
    )
    # log-weights: non-negative weights, an input that helps nothing goes towards 0
    log_w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(text.shape[1], dtype=torch.float64, requires_grad=bias)

    def stacked() -> torch.Tensor:
        a, b = log_w.exp()
        logits: torch.Tensor = a * text + b * image + shift
        return logits

    fitted = [log_w, shift] if bias else [log_w]
    _minimise(fitted, lambda: nn.functional.cross_entropy(stacked(), y))
    a, b = (float(w) for w in log_w.detach().exp())
    centred = shift.detach() - shift.detach().mean()  # only differences between classes count
    with torch.no_grad():
        answers = {"text": text, "image": image, "stacked": stacked()}
    return Stacking(
        text=a / temperatures[0],
        image=b / temperatures[1],
        bias=[float(v) for v in centred],
        text_temperature=temperatures[0],
        image_temperature=temperatures[1],
        nll={k: _nll(v, y) for k, v in answers.items()},
        top1={k: float((v.argmax(1) == y).double().mean()) for k, v in answers.items()},
    )
