"""How far a JPEG may be decoded at a reduced scale: the served image model's top-1 and the time a
photo takes when sellers' JPEGs decode at least `margin` x the served size (`fbmr.core.decode`'s
DRAFT_MARGIN), for each margin asked, on every val and test photo of the real sample.

    uv run python bench/draft_accuracy.py runs/real/prepared runs/bench/repo-l0new \
        --sides 512 1024 --margins 2 1 --out runs/bench/draft_accuracy

The sample's photos are stored at 256 px, and only 40 are kept as sellers uploaded them, too few
to show an accuracy unchanged. So each val and test photo is first made a seller-sized JPEG (its
256-px file enlarged to `side` px with Lanczos and saved as a progressive JPEG at quality 90, as
most raw uploads are), then served as the facade serves it (`fbmr.core.image.image_pixels`) with
each margin, and scored by the exported image model (bare onnxruntime over the repository's
latest `image_encoder` and `image_head`). The photos as stored (256 px: no draft) are the
reference row. Writes draft_accuracy.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from fbmr.core import decode
from fbmr.core.artifacts import latest_version_dir
from fbmr.core.contract import IMAGE_ENCODER
from fbmr.core.image import ImageSpec, image_pixels
from fbmr.training.data.prepared import PreparedDataset

BATCH = 32


def seller_sized(path: Path, side: int) -> bytes:
    """The stored photo enlarged to `side` px and saved as sellers' phones save it."""
    with Image.open(path) as image:
        large = image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    large.save(out, "JPEG", quality=90, progressive=True)
    return out.getvalue()


def served(photos: list[bytes], spec: ImageSpec, margin: int) -> tuple[NDArray[np.uint8], float]:
    """The model inputs of `photos` decoded with `margin`, and the mean ms a photo took."""
    decode.DRAFT_MARGIN = margin  # the one setting compared; main puts the default back
    start = time.perf_counter()
    pixels = np.stack([image_pixels(p, spec) for p in photos])
    return pixels, 1000 * (time.perf_counter() - start) / len(photos)


class ImageModel:
    """The exported image encoder and head, as Triton's `image_classifier` ensemble chains them."""

    def __init__(self, repository: Path) -> None:
        version = latest_version_dir(repository).name
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.encoder = ort.InferenceSession(
            str(repository / IMAGE_ENCODER / version / "model.onnx"), options
        )
        self.head = ort.InferenceSession(
            str(repository / "image_head" / version / "model.onnx"), options
        )

    def classes(self, pixels: NDArray[np.uint8]) -> NDArray[np.int64]:
        out = []
        for start in range(0, len(pixels), BATCH):
            (embedding,) = self.encoder.run(None, {"image": pixels[start : start + BATCH]})
            logits = self.head.run(["logits"], {"image_embedding": embedding})[0]
            out.append(np.asarray(logits).argmax(axis=1))
        return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the prepared real sample")
    parser.add_argument("repository", type=Path, help="an fbmr export of a run on it")
    parser.add_argument("--sides", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--margins", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/draft_accuracy"))
    args = parser.parse_args()

    data, model = PreparedDataset(args.data), ImageModel(args.repository)
    spec = ImageSpec()
    kept = decode.DRAFT_MARGIN
    rows: list[dict[str, object]] = []
    for split in args.splits:
        table = data.images(split)
        paths = [data.image_path(i) for i in table["image_id"]]
        labels = table["label_id"].to_numpy()
        stored, _ = served([p.read_bytes() for p in paths], spec, kept)
        reference = model.classes(stored)
        rows.append(
            {
                "split": split,
                "side": 256,
                "margin": None,
                "photos": len(paths),
                "ms": None,
                "top1": float((reference == labels).mean()),
                "agreement": 1.0,
                "pixel_diff": 0.0,
            }
        )
        for side in args.sides:
            photos = [seller_sized(p, side) for p in paths]
            for margin in args.margins:
                pixels, ms = served(photos, spec, margin)
                classes = model.classes(pixels)
                rows.append(
                    {
                        "split": split,
                        "side": side,
                        "margin": margin,
                        "photos": len(paths),
                        "ms": ms,
                        "top1": float((classes == labels).mean()),
                        "agreement": float((classes == reference).mean()),
                        "pixel_diff": float(
                            np.abs(pixels.astype(np.int16) - stored.astype(np.int16)).mean()
                        ),
                    }
                )
                print(rows[-1], flush=True)
    decode.DRAFT_MARGIN = kept
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "draft_accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(
        "| split | photos | JPEG side | margin | ms a photo | top-1 | same class as stored "
        "| mean pixel difference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        took = "—" if r["ms"] is None else f"{r['ms']:.2f}"
        margin = "stored, no draft" if r["margin"] is None else r["margin"]
        print(
            f"| {r['split']} | {r['photos']} | {r['side']} | {margin} | {took} | {r['top1']:.3f} "
            f"| {r['agreement']:.1%} | {r['pixel_diff']:.2f} |"
        )


if __name__ == "__main__":
    main()
