"""What validation decides about a trained run's stacking weights, recomputed without refitting:
the weights its fusion stage fit out of fold (metrics.json's `calibration`) against each input
alone at its out-of-fold temperature, by validation loss (the rule now) and by top-1 (the rule
before), with every candidate's top-1 per photo and per product on val and test. For runs whose
fusion stage was judged by the earlier rule: the out-of-fold fit costs most of the stage (about
an hour on 2 cores), and its weights are in the run's metrics.

    uv run python bench/fusion_choice.py --data runs/real/prepared RUN_DIR [--refit]

With --refit, the stack fit again from the run's saved out-of-fold answers by this checkout
(`fbmr.training.calibration.fit_stacking`), with its bias per class and without, are candidates
too: how a change to the stack's fit judges on the same answers, without the refits.

With --bound, the stack is also fit on each split's own answers and scored on them, and the
photo's weight is then searched for the best top-1 per product on them too: how far a late
fusion of the served text and image models (weights and a bias per class on their
log-probabilities) can carry the combined answer on that split, whatever the stack is fit on;
and one weight for both splits at once, chosen with test looked at (`in_split_bound` in the
output; none of it a model anyone could serve).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fbmr.training.calibration import Stacking, fit_stacking
from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.datasets import PhotoDataset, token_dataset
from fbmr.training.engine import predict
from fbmr.training.fusion_report import per_product
from fbmr.training.metrics import top1
from fbmr.training.stage_settings import fit_settings
from fbmr.training.stages.fusion import _cached_image_embeddings, _image_logits
from fbmr.training.trained import TrainedModels, load_trained_models


def answers(trained: TrainedModels, data: PreparedDataset, split: str) -> dict[str, NDArray[Any]]:
    """The served text and image models' logits per photo of `split`, its targets and products."""
    device = torch.device("cpu")
    settings = fit_settings(TrainConfig(), "fusion", pretrained=trained.text.sentence is not None)
    images, products = data.images(split), data.products(split)
    photos = PhotoDataset(data, images, trained.image_spec, augment=False)
    embeddings = _cached_image_embeddings(trained, split, len(photos), device)
    if embeddings is None:
        embeddings = predict(trained.image, photos, settings, device)[0]
    rows = data.product_rows(split)
    text = predict(trained.text, token_dataset(data, products, trained.tokenizer), settings, device)
    return {
        "text": text[1][rows],
        "image": _image_logits(trained.image, embeddings),
        "target": images["label_id"].to_numpy(dtype=np.int64, copy=True),
        "product": images["product_id"].astype(str).to_numpy(),
    }


def refit_stacking(run: Path, data: PreparedDataset, bias: bool) -> Stacking:
    """The stack fit by this checkout's `fit_stacking` on what the run's fusion stage fit its
    own on: per training photo, its product's out-of-fold text logits and its own image logits."""
    record = torch.load(run / "fusion" / "out_of_fold.pt", weights_only=True)
    return fit_stacking(
        record["text_logits"].numpy()[data.product_rows("train")],
        record["image_logits"].numpy(),
        data.images("train")["label_id"].to_numpy(dtype=np.int64),
        bias,
    )


def fused(
    split_answers: dict[str, NDArray[Any]],
    text_weight: float,
    image_weight: float,
    bias: NDArray[np.float32] | np.float32,
) -> NDArray[np.float32]:
    """A stack's logits per photo: its weights on the text and image logits, plus its bias."""
    logits = text_weight * split_answers["text"] + image_weight * split_answers["image"] + bias
    return np.asarray(logits, dtype=np.float32)


def weightings(stack: Stacking) -> Iterator[tuple[float, NDArray[np.float32] | np.float32]]:
    """The photo's weights and biases the bounds try: `BOUND_SCALES` times the weight the
    stack's fit gave, each with its bias per class and with none."""
    bias = np.asarray(stack.bias, np.float32)
    for scale in BOUND_SCALES:
        for with_bias in (bias, np.float32(0.0)):
            yield float(scale * stack.image), with_bias


def top1_per_product(split_answers: dict[str, NDArray[Any]], logits: NDArray[Any]) -> float:
    """Top-1 of `logits` (one row per photo of the split) with each product's photos pooled."""
    pooled, target, _ = per_product(
        logits.astype(np.float32), split_answers["target"], split_answers["product"]
    )
    return top1(pooled, target)


def in_split_bound(split_answers: dict[str, NDArray[Any]]) -> dict[str, float]:
    """Top-1 per photo and per product of the stack fit on these very answers (by its loss),
    beside text's alone at its own temperature fit on them too; and the best top-1 per product
    any weight of the photo gives on them, with the fit's bias per class or none (`BOUND_SCALES`
    times the fit's weight), since the loss's optimum need not be top-1's."""
    target = split_answers["target"]
    stack = fit_stacking(split_answers["text"], split_answers["image"], target, bias=True)
    text = (split_answers["text"] / stack.text_temperature).astype(np.float32)
    stacked = fused(split_answers, stack.text, stack.image, np.asarray(stack.bias, np.float32))
    out = {"text_weight": stack.text, "image_weight": stack.image}
    for name, logits in (("text", text), ("stack", stacked)):
        out[f"{name}_top1_per_photo"] = top1(logits, target)
        out[f"{name}_top1_per_product"] = top1_per_product(split_answers, logits)
    out["best_image_weight_top1_per_product"] = max(
        top1_per_product(split_answers, fused(split_answers, stack.text, weight, bias))
        for weight, bias in weightings(stack)
    )
    return out


def one_weight_bound(by_split: dict[str, dict[str, NDArray[Any]]]) -> dict[str, float]:
    """The stack fit on val, its photo's weight (times `BOUND_SCALES`, with its bias or none)
    then chosen for the largest gain over text per product on val and on test at once (the
    smaller of the two): the most one late fusion gives on both splits, test looked at."""
    val = by_split["val"]
    stack = fit_stacking(val["text"], val["image"], val["target"], bias=True)
    text = {name: top1_per_product(split, split["text"]) for name, split in by_split.items()}
    best: dict[str, float] = {}
    for weight, bias in weightings(stack):
        gains = {
            f"{name}_gain_per_product": top1_per_product(
                split, fused(split, stack.text, weight, bias)
            )
            - text[name]
            for name, split in by_split.items()
        }
        if not best or min(gains.values()) > min(best.values()):
            best = gains
    return best


# the photo's weights tried for the best top-1, as multiples of the weight the stack's fit gave
BOUND_SCALES = np.linspace(0.0, 4.0, 81)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("run", type=Path)
    parser.add_argument(
        "--refit",
        action="store_true",
        help="also the stack fit again by this checkout from the run's out_of_fold.pt",
    )
    parser.add_argument(
        "--bound",
        action="store_true",
        help="also the stack fit on each split's own answers: the ceiling of a late fusion",
    )
    args = parser.parse_args()
    data = PreparedDataset(args.data)
    stacking = json.loads((args.run / "fusion" / "metrics.json").read_text())["calibration"]
    bias = np.asarray(stacking.get("bias", 0.0), dtype=np.float32)  # none before the bias
    none = np.zeros((), np.float32)
    candidates: dict[str, tuple[float, float, NDArray[np.float32]]] = {
        "trained": (stacking["text"], stacking["image"], bias),
        "text": (1 / stacking["text_temperature"], 0.0, none),
        "image": (0.0, 1 / stacking["image_temperature"], none),
    }
    if args.refit:
        for name, bias_too in (("refit", True), ("refit_without_bias", False)):
            refit = refit_stacking(args.run, data, bias_too)
            candidates[name] = (refit.text, refit.image, np.asarray(refit.bias, np.float32))
    figures: dict[str, dict[str, dict[str, float]]] = {}
    bound: dict[str, dict[str, float]] = {}
    by_split: dict[str, dict[str, NDArray[Any]]] = {}
    trained = load_trained_models(args.run, torch.device("cpu"), fusion=False)
    for split in ("val", "test"):
        split_answers = answers(trained, data, split)
        target = split_answers["target"]
        if args.bound:
            bound[split] = in_split_bound(split_answers)
            by_split[split] = split_answers
        for name, (t, i, b) in candidates.items():
            logits = fused(split_answers, t, i, b)
            loss = float(
                torch.nn.functional.cross_entropy(
                    torch.from_numpy(logits), torch.from_numpy(target)
                )
            )
            figures.setdefault(name, {})[split] = {
                "loss": loss,
                "top1_per_photo": top1(logits, target),
                "top1_per_product": top1_per_product(split_answers, logits),
            }
    by_loss = min(candidates, key=lambda n: figures[n]["val"]["loss"])
    by_top1 = max(
        candidates, key=lambda n: (figures[n]["val"]["top1_per_photo"], -figures[n]["val"]["loss"])
    )
    result: dict[str, Any] = {"kept_by_loss": by_loss, "kept_by_top1": by_top1, "figures": figures}
    if bound:
        result["in_split_bound"] = bound | {"one_weight_for_both": one_weight_bound(by_split)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
