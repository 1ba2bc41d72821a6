"""The limit of the hardware for the served models: the exported ONNX files of the product
classifier (image encoder, text encoder, fusion head) in one process with onnxruntime, configured
for speed, on the same preprocessed listings the servers get. Batch 1 sequentially (latency),
then batches of 8 and 32 (throughput).

    uv run python bench/bare_onnxruntime.py --repo model_repository --data runs/real/prepared

Sessions: intra-op threads set (default: every core), one inter-op thread, intra-op spinning
off (idle threads sleep rather than spin, as they must on a machine shared with a server and a
load generator), all graph optimisations. The ONNX files are the latest version in the
repository (`MODEL/VERSION/model.onnx`); model and tensor names come from fbmr.core.contract.
Preprocessing (decoding, resizing, tokenising) happens before the clock starts. Writes
bare_onnxruntime.json to --out: per batch size, p50/p90/p99 per batch and rows/s.

With --from-files, batches of 1 and 8 are measured once more from the request's content: each
listing's photo as bytes (with --photos, the folder of photos as sellers uploaded them that the
Locust steps send; else the prepared photos) and its text, decoded and tokenised on the clock
through the same `fbmr.core` calls the facade makes, a batch's photos in parallel on --threads
threads (Pillow decodes without the GIL). That is what a process with no HTTP and no Triton
makes of those requests: the limit a front door that decodes the photos it is sent is held to
(`from_files` in the json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from common import Listing, ModelInputs, listings, load_listings, model_inputs, percentiles
from numpy.typing import NDArray

from fbmr.core import contract
from fbmr.core.artifacts import ModelArtifacts

Batch = TypeVar("Batch")


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class ProductClassifier:
    """The product classifier's chain as the ensemble runs it: image and text encoders, then the
    fusion head."""

    def __init__(self, repository: Path, threads: int, providers: list[str] | None = None) -> None:
        version = ModelArtifacts.load(repository).version

        def model(name: str) -> Path:
            return repository / name / str(version) / "model.onnx"

        # the fusion head's own text encoder exists only when fusion training changed it, and
        # then the product classifier uses it
        text = contract.FUSION_TEXT_ENCODER
        if not model(text).is_file():
            text = contract.TEXT_ENCODER
        available = ort.get_available_providers()
        providers = providers or [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        options = session_options(threads)
        self.version = version
        self.files = {
            "image": model(contract.IMAGE_ENCODER),
            "text": model(text),
            "head": model(contract.FUSION_HEAD),
        }
        self.sessions = {
            k: ort.InferenceSession(str(path), options, providers=providers)
            for k, path in self.files.items()
        }

    def __call__(self, inputs: dict[str, NDArray[Any]]) -> NDArray[Any]:
        """Probabilities for a batch of the product classifier's inputs."""
        (image_embedding,) = self.sessions["image"].run(
            [contract.IMAGE_EMBEDDING], {contract.IMAGE: inputs[contract.IMAGE]}
        )
        (text_embedding,) = self.sessions["text"].run(
            [contract.TEXT_EMBEDDING], {contract.TOKEN_IDS: inputs[contract.TOKEN_IDS]}
        )
        probabilities: NDArray[Any]
        (probabilities,) = self.sessions["head"].run(
            [contract.PROBABILITIES],
            {contract.IMAGE_EMBEDDING: image_embedding, contract.TEXT_EMBEDDING: text_embedding},
        )
        return probabilities


def measure(
    model: ProductClassifier, inputs: ModelInputs, batch: int, min_seconds: float, warmup: int
) -> dict[str, Any]:
    """Batches of `batch` rows back to back, cycling over the listings, for at least
    `min_seconds` (and at least one pass over them)."""
    batches = [inputs.batch(cut) for cut in whole_batches(len(inputs), batch)]
    return timed(model, batches, lambda b: len(b[contract.IMAGE]), batch, min_seconds, warmup)


def measure_from_files(
    model: ProductClassifier,
    artifacts: ModelArtifacts,
    items: list[Listing],
    batch: int,
    min_seconds: float,
    warmup: int,
    decoders: ThreadPoolExecutor,
) -> dict[str, Any]:
    """As `measure`, with each batch's photos decoded (on `decoders`) and texts tokenised on the
    clock, as the facade does for each request (`ModelArtifacts.image_input` and `text_input`)."""

    def answer(rows: list[Listing]) -> None:
        photos = decoders.map(artifacts.image_input, [row.photo for row in rows])
        model(
            {
                contract.IMAGE: np.stack(list(photos)),
                contract.TOKEN_IDS: np.stack([artifacts.text_input(row.text) for row in rows]),
            }
        )

    batches = [items[cut] for cut in whole_batches(len(items), batch)]
    return timed(answer, batches, len, batch, min_seconds, warmup)


def whole_batches(count: int, batch: int) -> list[slice]:
    """Consecutive batches of `batch` of `count` rows, the rest left out; all of them in one
    batch when there are fewer."""
    return [slice(s, s + batch) for s in range(0, count - batch + 1, batch)] or [slice(0, batch)]


def timed(
    answer: Callable[[Batch], object],
    batches: list[Batch],
    rows_of: Callable[[Batch], int],
    batch: int,
    min_seconds: float,
    warmup: int,
) -> dict[str, Any]:
    """`answer` over `batches` (of `rows_of` rows each) back to back, cycling, for at least
    `min_seconds` (and at least one pass) after `warmup` batches: per batch p50/p90/p99, rows/s."""
    for i in range(warmup):
        answer(batches[i % len(batches)])
    latencies, rows = [], 0
    began = time.perf_counter()
    while True:
        for b in batches:
            start = time.perf_counter()
            answer(b)
            latencies.append((time.perf_counter() - start) * 1000)
            rows += rows_of(b)
        if time.perf_counter() - began >= min_seconds:
            break
    elapsed = time.perf_counter() - began
    return {
        "batch": batch,
        "batches": len(latencies),
        "rows": rows,
        "rows_s": rows / elapsed,
        **percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=contract.DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (val listings)")
    parser.add_argument("--listings", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=15.0, help="at least, per batch size")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bare_onnxruntime"))
    parser.add_argument(
        "--from-files",
        action="store_true",
        help="batches of 1 and 8 once more, decoding and tokenising on the clock",
    )
    parser.add_argument(
        "--photos",
        type=Path,
        help="with --from-files: photos as sellers uploaded them, named by image id "
        "(bench/locustfile.py's --photos); default the prepared photos",
    )
    args = parser.parse_args()

    inputs = model_inputs(args.repo, listings(args.data, args.listings))
    model = ProductClassifier(args.repo, args.threads)
    results = []
    for batch in args.batches:
        result = measure(model, inputs, batch, args.seconds, warmup=3)
        results.append(result)
        print(
            f"batch {batch:>2}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
            f"per batch, {result['rows_s']:.1f} rows/s",
            flush=True,
        )
    from_files = []
    if args.from_files:
        artifacts = ModelArtifacts.load(args.repo)
        items = load_listings(args.data, "val", args.listings, args.photos)
        with ThreadPoolExecutor(args.threads) as decoders:
            for batch in (1, 8):
                result = measure_from_files(
                    model, artifacts, items, batch, args.seconds, 3, decoders
                )
                from_files.append(result)
                print(
                    f"from files, batch {batch:>2}: p50 {result['p50_ms']:.1f} ms, "
                    f"p99 {result['p99_ms']:.1f} ms per batch, {result['rows_s']:.1f} rows/s",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "image encoder + text encoder + fusion head, onnxruntime in-process",
        "version": model.version,
        "files": {k: str(v) for k, v in model.files.items()},
        "threads": args.threads,
        "providers": model.sessions["image"].get_providers(),
        "listings": len(inputs),
        "image_input": {"shape": list(inputs.images.shape), "dtype": str(inputs.images.dtype)},
        "results": results,
        "from_files": {
            "photos": str(args.photos) if args.photos else "prepared",
            "results": from_files,
        }
        if args.from_files
        else None,
    }
    (args.out / "bare_onnxruntime.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
