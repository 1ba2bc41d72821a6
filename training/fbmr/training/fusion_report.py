"""What the photo does to the fusion model's decisions, and accuracy per photo and per product.

A fusion sample is one photo with its product's text; a product (a listing) has one or more
photos. Per product, a model's answer pools its answers for the product's photos: the mean of
their log-probabilities (the normalised geometric mean of the probabilities), which is also how
an ensemble's members are pooled (fbmr.training.models.EnsembleHead).

The photo's part in a decision is measured by dropping it: the fusion model's logits with the
image embedding zeroed and the image head's term left out (what modality dropout trains the
combined head for) are the answer without the photo. The photo's share of a decision is the size
of what it moves, fused minus dropped logits, against the size of the rest, the dropped logits,
each centred over the classes (logits mean the same up to a constant): 0 when the photo moves
nothing, 1/2 when it weighs as much as the text.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import TensorDataset

from fbmr.core.pooling import log_softmax, pool_log_probabilities
from fbmr.training.engine import make_loader
from fbmr.training.metrics import top1
from fbmr.training.models import FusionModel
from fbmr.training.retrieval import by_listing
from fbmr.training.stage_settings import FitSettings

# A model's logits per photo, by name
Answers = dict[str, NDArray[np.float32]]


@torch.no_grad()
def fused_and_dropped(
    model: FusionModel,
    samples: TensorDataset,
    unfreeze_text: bool,
    settings: FitSettings,
    device: torch.device,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The fusion model's logits per sample (image embedding, text embedding or token ids with
    `unfreeze_text`, target), and its logits with the photo dropped (module docstring)."""
    model.eval().to(device)
    head = model.head
    fused, dropped = [], []
    for image, second, _ in make_loader(samples, settings, shuffle=False):
        image, second = image.to(device), second.to(device)
        text = model.text_encoder(second) if unfreeze_text else second
        fused.append(head(image, text)[1].float().cpu())
        blank = head.head(head.combined(torch.zeros_like(image), text))
        if head.text_head is not None:
            t, _, c = head.weights
            blank = t * head.text_head(text) + c * blank + head.bias  # all but the photo
        dropped.append(blank.float().cpu())
    if not fused:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(fused).numpy(), torch.cat(dropped).numpy()


def per_product(
    logits: NDArray[np.float32], targets: NDArray[np.int64], products: NDArray[np.str_]
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.str_]]:
    """(pooled log-probabilities, target, product id) per product: its photos' answers pooled as
    the facade pools a request's photos (`fbmr.core.pooling`), products in order of first
    appearance."""
    groups, first, ids = by_listing(log_softmax(logits), products)
    pooled = np.stack([pool_log_probabilities(group) for group in groups])
    return pooled.astype(np.float32), targets[first], ids.astype(str)


def _photo_share(fused: NDArray[np.float32], dropped: NDArray[np.float32]) -> NDArray[np.float64]:
    def size(x: NDArray[np.float32]) -> NDArray[np.float64]:
        centred = x - x.mean(axis=1, keepdims=True)
        norms: NDArray[np.float64] = np.linalg.norm(centred, axis=1).astype(np.float64)
        return norms

    moved, rest = size(fused - dropped), size(dropped)
    share: NDArray[np.float64] = moved / np.maximum(moved + rest, 1e-12)
    return share


def decision_report(
    answers: Answers,
    targets: NDArray[np.int64],
    products: NDArray[np.str_],
    classes: tuple[str, ...],
) -> dict[str, object]:
    """Top-1 per photo and per product of each model in `answers` (which holds "fusion" and
    "fusion_photo_dropped" beside the inputs), the photo's share of the fusion model's decisions
    and how many it changes, overall and per category (by the true category)."""
    share = _photo_share(answers["fusion"], answers["fusion_photo_dropped"])
    changed = answers["fusion"].argmax(1) != answers["fusion_photo_dropped"].argmax(1)
    pooled = {name: per_product(logits, targets, products) for name, logits in answers.items()}
    product_targets = pooled["fusion"][1]

    def figures(photos: NDArray[np.bool_], items: NDArray[np.bool_]) -> dict[str, object]:
        return {
            "photos": int(photos.sum()),
            "products": int(items.sum()),
            "photo_share": float(share[photos].mean()) if photos.any() else float("nan"),
            "decided_by_photo": float(changed[photos].mean()) if photos.any() else float("nan"),
            "top1_per_photo": {n: top1(a[photos], targets[photos]) for n, a in answers.items()},
            "top1_per_product": {
                n: top1(p[0][items], product_targets[items]) for n, p in pooled.items()
            },
        }

    report = figures(np.ones(len(targets), bool), np.ones(len(product_targets), bool))
    report["per_category"] = {
        name: figures(targets == label, product_targets == label)
        for label, name in enumerate(classes)
    }
    return report
