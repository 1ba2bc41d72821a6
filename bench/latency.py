"""Latency and throughput of product classification, one listing per request, at several levels
of concurrency: either Triton's product_classifier ensemble over gRPC, or the facade's
POST /v1/predict/combined over HTTP (photo upload + text, preprocessing included).

    uv run python bench/latency.py triton --repo model_repository --data runs/real/prepared
    uv run python bench/latency.py facade --url http://127.0.0.1:8080 --data runs/real/prepared

Requests are real validation listings. Writes latency.json (p50/p90/p99, throughput) and
latency.png (latency distribution per concurrency level) to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from common import listings, model_inputs, percentiles, triton_datatype
from figures import plt, save

from fbmr.core import contract
from fbmr.serving.triton.ports import TritonPorts
from fbmr.serving.triton.server import LocalTriton


def triton_caller(
    url: str, repository: Path, items: list[tuple[Path, str]]
) -> tuple[Callable[[], Any], Callable[[Any, int], None]]:
    """(connect, call): call(connection, i) sends listing i to product_classifier, preprocessed."""
    inputs = model_inputs(repository, items)
    ensemble = contract.ENSEMBLES[contract.Kind.combined]
    requests = []
    for i in range(len(inputs)):
        tensors = []
        for name, array in inputs.batch(slice(i, i + 1)).items():
            tensor = grpcclient.InferInput(name, list(array.shape), triton_datatype(array))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requests.append(tensors)
    wanted = [grpcclient.InferRequestedOutput(contract.PROBABILITIES)]

    def connect() -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(url)

    def call(client: grpcclient.InferenceServerClient, i: int) -> None:
        client.infer(ensemble.name, requests[i], outputs=wanted)

    return connect, call


def facade_caller(
    url: str, items: list[tuple[Path, str]]
) -> tuple[Callable[[], Any], Callable[[Any, int], None]]:
    """(connect, call): call(connection, i) posts listing i, raw photo and text, to the facade."""
    bodies = [(photo.read_bytes(), text) for photo, text in items]

    def connect() -> httpx.Client:
        return httpx.Client(base_url=url, timeout=60)

    def call(client: httpx.Client, i: int) -> None:
        photo, text = bodies[i]
        response = client.post(
            contract.PREDICT_COMBINED_PATH, files={"photo": ("p.jpg", photo)}, data={"text": text}
        )
        response.raise_for_status()

    return connect, call


def run_load(
    connect: Callable[[], Any],
    call: Callable[[Any, int], None],
    requests: int,
    items: int,
    concurrency: int,
) -> dict[str, Any]:
    """`requests` calls from `concurrency` clients, each with its own connection."""
    clients = [connect() for _ in range(concurrency)]

    def worker(c: int) -> list[float]:
        latencies = []
        for r in range(c, requests, concurrency):
            start = time.perf_counter()
            call(clients[c], r % items)
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = np.array([ms for shard in pool.map(worker, range(concurrency)) for ms in shard])
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "throughput_rps": len(latencies) / elapsed,
        **percentiles(latencies),
        "latencies_ms": latencies.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["triton", "facade"])
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (val listings)")
    parser.add_argument(
        "--repo", type=Path, default=contract.DEFAULT_MODEL_REPOSITORY, help="triton: repository"
    )
    parser.add_argument(
        "--url",
        help="triton: gRPC host:port of a running server (default: start one); facade: base URL",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--listings", type=int, default=128, help="distinct listings sent")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/latency"))
    args = parser.parse_args()
    if args.target == "facade" and not args.url:
        parser.error("facade: give --url of a running facade (fbmr serve)")

    items = listings(args.data, min(args.requests, args.listings))
    server: LocalTriton | nullcontext[None] = nullcontext()
    if args.target == "triton" and not args.url:
        server = LocalTriton(args.repo, TritonPorts(http=18800, grpc=18801, metrics=18802))
    with server:
        if args.target == "triton":
            url = args.url or cast(LocalTriton, server).ports.grpc_url
            connect, call = triton_caller(url, args.repo, items)
        else:
            connect, call = facade_caller(args.url, items)
        with connect() as warm:
            for i in range(min(10, len(items))):  # connections and first-run costs off the clock
                call(warm, i)
        results = [run_load(connect, call, args.requests, len(items), c) for c in args.concurrency]

    args.out.mkdir(parents=True, exist_ok=True)
    summary = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in results]
    what = (
        f"{contract.ENSEMBLES[contract.Kind.combined].name} (Triton gRPC)"
        if args.target == "triton"
        else "POST /v1/predict/combined"
    )
    (args.out / "latency.json").write_text(
        json.dumps({"target": what, "results": summary}, indent=2)
    )
    figure, axis = plt.subplots(figsize=(7, 4))
    for r in results:
        values = np.sort(r["latencies_ms"])
        axis.plot(values, np.linspace(0, 1, len(values)), label=f"{r['concurrency']} concurrent")
    axis.set_xlabel("request latency (ms)")
    axis.set_ylabel("share of requests at most this long")
    axis.set_title(what)
    axis.grid(alpha=0.3)
    axis.legend()
    save(figure, args.out / "latency.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
