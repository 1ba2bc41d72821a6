"""What decoding a seller's photo costs the facade: CPU time per photo and peak memory, before
and after decoding large JPEGs at a reduced scale (`fbmr.core.decode.draft`) and bounding the
pixels being decoded at once (`PixelBudget`).

    uv run python bench/decode_cost.py ../shared/data/marketplace/raw_images

Time: `image_pixels` on each photo of the folder (real uploads: JPEGs up to 1,024 px and PNGs)
and on a 4,000 x 3,000 phone-sized JPEG made here, with the draft (now) and without it
(before), median of --repeat runs, and how far the two inputs differ (mean absolute pixel
difference, 0-255). Memory: four threads each decoding a 7,999 x 7,999 PNG at once (the largest
photo the default pixel limit lets in), in a fresh process, as before and as the facade now
does (its pixel budget, and glibc told to return large buffers); peak and final resident
memory. The "before" rows keep this checkout's other decoding fixes (no copy of a photo that
needs no turning or conversion), so they understate the old cost.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fbmr.core import decode
from fbmr.core.image import ImageSpec, image_pixels

MEMORY_PROBE = """
import os, resource, sys
from concurrent.futures import ThreadPoolExecutor
import psutil
from fbmr.core.decode import PixelBudget
from fbmr.core.image import image_pixels
from fbmr.serving.http.inputs import return_large_buffers
budget = None
if sys.argv[1] == "now":  # what the facade does
    return_large_buffers()
    budget = PixelBudget(64_000_000)
data = sys.stdin.buffer.read()
with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda _: image_pixels(data, budget=budget), range(4)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(peak, psutil.Process(os.getpid()).memory_info().rss // 2**20)
"""


def _ms(decode: Callable[[bytes], object], data: bytes, repeat: int) -> float:
    """Median milliseconds of `decode(data)` over `repeat` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _without_draft(data: bytes) -> NDArray[Any]:
    draft = decode.draft
    decode.draft = lambda image, side: None
    try:
        return image_pixels(data)
    finally:
        decode.draft = draft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="A folder of photos as sellers upload them.")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    phone = io.BytesIO()
    noise = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((4000, 3000), Image.Resampling.BICUBIC).save(phone, "JPEG")
    photos = {p.name: p.read_bytes() for p in sorted(args.photos.iterdir())}
    photos["phone 4000x3000 (made here)"] = phone.getvalue()
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for data in photos.values():
        opened = Image.open(io.BytesIO(data))
        group = f"{opened.format} {max(opened.size)} px"
        before = _ms(_without_draft, data, args.repeat)
        after = _ms(image_pixels, data, args.repeat)
        diff = float(np.abs(image_pixels(data).astype(int) - _without_draft(data)).mean())
        groups.setdefault(group, []).append((before, after, diff))
    spec = ImageSpec()
    print(f"model input {spec.image_size} px (resized to {spec.resize_size} first)\n")
    print("| photos | how many | before: ms a photo | now | mean pixel difference |")
    print("| --- | --- | --- | --- | --- |")
    for group, rows in sorted(groups.items()):
        before, after, diff = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"| {group} | {len(rows)} | {before:.2f} | {after:.2f} | {diff:.2f} |")
    big = io.BytesIO()
    Image.new("RGB", (7999, 7999), (200, 120, 40)).save(big, "PNG")
    print("\n| four 7,999 x 7,999 PNGs at once | peak resident MB | resident MB after |")
    print("| --- | --- | --- |")
    for name, mode in (
        ("no budget, glibc's default threshold (before)", "before"),
        ("budget of 64 megapixels, large buffers returned (now)", "now"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, mode],
            input=big.getvalue(),
            capture_output=True,
            check=True,
        )
        peak_mb, after_mb = out.stdout.decode().split()
        print(f"| {name} | {peak_mb} | {after_mb} |")


if __name__ == "__main__":
    main()
