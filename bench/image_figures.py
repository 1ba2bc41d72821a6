"""The image stage's figures for a trained run, recomputed from its checkpoint and feature
cache: top-1 per photo and per listing (its photos pooled), and the photo-only similar-listing
share at 10 (`fbmr.training.stages.image.listing_figures`). For runs trained before the stage
recorded the per-listing figures, and to put two trunks' runs side by side.

    uv run python bench/image_figures.py --data runs/real/prepared RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fbmr.core.fileio import atomic_write_json
from fbmr.training.checkpoints import load_checkpoint
from fbmr.training.config import TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.engine import SPLITS, predict
from fbmr.training.layout import RunLayout
from fbmr.training.meta import ImageMeta
from fbmr.training.metrics import top1
from fbmr.training.stage_settings import fit_settings
from fbmr.training.stages.image import build_image_model, listing_figures
from fbmr.training.stages.image_cache import CachedFeatures, OverCache


def figures(run: Path, data: PreparedDataset) -> dict[str, object]:
    layout = RunLayout(run)
    checkpoint = load_checkpoint(layout.best("image"))
    meta = ImageMeta.from_dict(checkpoint["meta"], str(layout.best("image")))
    model = build_image_model(meta, len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["model"])
    settings = fit_settings(TrainConfig(), "image")
    trainable = OverCache(model, meta.trainable_from).eval()
    answers = {}
    for split in SPLITS:
        cache = torch.load(layout.image_features(split), map_location="cpu", weights_only=True)
        photos = CachedFeatures(cache["features"], cache["labels"], augment=False)
        answers[split] = predict(trainable, photos, settings, torch.device("cpu"))
    per_photo = {s: top1(answers[s][1], answers[s][2]) for s in SPLITS}
    return {"backbone": str(meta.backbone), "top1_per_photo": per_photo,
            **listing_figures(data, answers)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (cached mode)")
    parser.add_argument("--data", type=Path, required=True, help="the prepared dataset")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/image_figures.json"))
    args = parser.parse_args()
    data = PreparedDataset(args.data)
    results = {str(run): figures(run, data) for run in args.runs}
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
