"""Latency and throughput of a Triton ensemble over gRPC, one request (one listing) at a time.

    uv run python bench/triton_latency.py --repo model_repository --data runs/real/prepared

Starts a local tritonserver on the repository (or calls --url), sends real validation listings
(photo + text) to the product_classifier ensemble sequentially and then from several concurrent
clients, and writes the figures (JSON) and the latency distributions (PNG) to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import matplotlib
import numpy as np
import tritonclient.grpc as grpcclient

from fbmr.core.image import ImageSpec, preprocess_image
from fbmr.core.text import Tokenizer
from fbmr.export.repository import latest_artifacts
from fbmr.serving.triton_server import LocalTriton, TritonPorts
from fbmr.training.data.prepared import PreparedDataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def listings(repository: Path, data: PreparedDataset, count: int) -> list[dict[str, np.ndarray]]:
    """`count` validation listings as model inputs, preprocessed as the facade does."""
    artifacts = latest_artifacts(repository)
    manifest = json.loads((artifacts / "fbmr.json").read_text())
    spec = ImageSpec.from_dict(manifest["image_spec"])
    tokenizer = Tokenizer.load(artifacts / manifest["tokenizer"])
    products = data.products("val").head(count)
    images = data.images("val").drop_duplicates("product_id").set_index("product_id")
    out = []
    for _, product in products.iterrows():
        path = data.image_path(images.loc[product["product_id"], "image_id"])
        out.append(
            {
                "image": preprocess_image(path, spec)[None],
                "token_ids": tokenizer.encode(data.text(product))[None],
            }
        )
    return out


def infer(client: grpcclient.InferenceServerClient, model: str, inputs: dict) -> float:
    """One request; returns its latency in milliseconds."""
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(
            name, list(array.shape), "FP32" if name == "image" else "INT64"
        )
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    start = time.perf_counter()
    client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput("probabilities")])
    return (time.perf_counter() - start) * 1000


def run_load(url: str, model: str, requests: list[dict], concurrency: int) -> dict:
    """Send `requests` from `concurrency` clients, each with its own connection."""
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    shards = [requests[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = pool.map(
            lambda pair: [infer(pair[0], model, r) for r in pair[1]],
            zip(clients, shards, strict=True),
        )
        latencies = np.array([ms for shard in results for ms in shard])
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "throughput_rps": len(latencies) / elapsed,
        **{f"p{q}_ms": float(np.percentile(latencies, q)) for q in (50, 90, 99)},
        "mean_ms": float(latencies.mean()),
        "latencies_ms": latencies.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="exported model repository")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (val listings)")
    parser.add_argument("--url", help="a running Triton's gRPC host:port (default: start one)")
    parser.add_argument("--model", default="product_classifier")
    parser.add_argument("--requests", type=int, default=200, help="requests per load level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/triton"))
    args = parser.parse_args()

    data = PreparedDataset(args.data)
    inputs = listings(args.repo, data, min(args.requests, len(data.products("val"))))
    requests = [inputs[i % len(inputs)] for i in range(args.requests)]
    server = (
        nullcontext()
        if args.url
        else LocalTriton(args.repo, TritonPorts(http=18800, grpc=18801, metrics=18802))
    )
    with server:
        url = args.url or server.ports.grpc_url
        with grpcclient.InferenceServerClient(url) as client:
            for r in inputs[:10]:  # warm connections and caches before measuring
                infer(client, args.model, r)
        results = [run_load(url, args.model, requests, c) for c in args.concurrency]

    args.out.mkdir(parents=True, exist_ok=True)
    summary = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in results]
    (args.out / "latency.json").write_text(
        json.dumps({"model": args.model, "results": summary}, indent=2)
    )
    figure, axis = plt.subplots(figsize=(7, 4))
    for r in results:
        values = np.sort(r["latencies_ms"])
        axis.plot(values, np.linspace(0, 1, len(values)), label=f"{r['concurrency']} concurrent")
    axis.set_xlabel("request latency (ms)")
    axis.set_ylabel("share of requests")
    axis.set_title(f"{args.model} over gRPC")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out / "latency.png", dpi=120)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
