"""Batch-scoring throughput: `fbmr score` through the facade and straight to Triton, against bare
onnxruntime over the same ONNX files, on the same rows, in one run on one machine.

Rows: every photo of the chosen splits of a prepared dataset, with its listing's text (the
combined model: image encoder, text encoder, fusion head). The three contenders:

- facade: `fbmr score --url` with `--concurrency 8` against `fbmr serve` (one worker) and Triton;
- direct: `fbmr score --triton-url` (photos preprocessed in a process pool, batches of 32 to the
  `product_classifier` ensemble over gRPC);
- bare onnxruntime: one process, the same preprocessing (`fbmr.core`) and tokeniser, the ONNX files
  of the served version run at batch 32, thread spinning off (several sessions in one process
  otherwise fight over the cores).

Then where the time goes, each part measured alone: preprocessing (one process, and the pool),
the models alone in onnxruntime, and Triton's ensemble alone (the same preprocessed batches sent
over gRPC, 1 and 2 in flight).

    python bench/score.py --data runs/real/prepared --repo runs/real/model_repository \
        [--repo-int8 runs/real/model_repository_int8]

With --repo-int8 the same runs follow on the INT8 files; every ratio is to float32 bare
onnxruntime.

Figures: printed, and written to runs/bench/score/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fbmr.client import Client
from fbmr.client.batch.rows import prepare_photos
from fbmr.client.batch.run import default_workers
from fbmr.client.batch.scorer import TritonScorer
from fbmr.core import contract
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import Kind

BATCH = 32
FBMR = str(Path(sys.executable).parent / "fbmr")


def rows_table(prepared: Path, splits: list[str], out: Path) -> Path:
    """One row per photo of `splits`: id, the listing's text, the photo's absolute path."""
    from fbmr.core.listing import listing_text

    products = pd.read_parquet(prepared / "products.parquet").set_index("product_id")
    images = pd.read_parquet(prepared / "images.parquet")
    images = images[images["split"].isin(splits)]
    table = pd.DataFrame(
        {
            "id": images["image_id"].to_numpy(),
            "text": [
                listing_text(products.at[p, "product_name"], products.at[p, "product_description"])
                for p in images["product_id"]
            ],
            "photo": [str((prepared / f).resolve()) for f in images["file"]],
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out)
    return out


def latest_onnx(repo: Path, model: str) -> Path:
    versions = sorted(int(p.name) for p in (repo / model).iterdir() if p.name.isdigit())
    return repo / model / str(versions[-1]) / "model.onnx"


class BareOnnx:
    """The combined model as three onnxruntime sessions in this process."""

    def __init__(self, repo: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        text_model = (
            contract.FUSION_TEXT_ENCODER
            if (repo / contract.FUSION_TEXT_ENCODER).is_dir()
            else contract.TEXT_ENCODER
        )

        def session(model: str) -> ort.InferenceSession:
            return ort.InferenceSession(
                str(latest_onnx(repo, model)), options, providers=["CPUExecutionProvider"]
            )

        self.image, self.text, self.fusion = map(
            session, (contract.IMAGE_ENCODER, text_model, contract.FUSION_HEAD)
        )

    def __call__(self, image: NDArray[Any], tokens: NDArray[Any]) -> NDArray[Any]:
        (image_embedding,) = self.image.run([contract.IMAGE_EMBEDDING], {contract.IMAGE: image})
        (text_embedding,) = self.text.run([contract.TEXT_EMBEDDING], {contract.TOKEN_IDS: tokens})
        probabilities: NDArray[Any]
        (probabilities,) = self.fusion.run(
            [contract.PROBABILITIES],
            {contract.IMAGE_EMBEDDING: image_embedding, contract.TEXT_EMBEDDING: text_embedding},
        )
        return probabilities


def bare_onnxruntime(table: pd.DataFrame, artifacts: ModelArtifacts, repo: Path) -> dict[str, Any]:
    """End to end in one process (read, preprocess, tokenise, run), and the models alone."""
    model = BareOnnx(repo)
    pixels, encode = artifacts.image_input, artifacts.text_input
    model(  # warm-up
        np.stack([pixels(Path(table["photo"].iloc[0]).read_bytes())] * BATCH),
        np.stack([encode(table["text"].iloc[0])] * BATCH),
    )
    started = time.perf_counter()
    inputs, preprocess_s = [], 0.0
    for start in range(0, len(table), BATCH):
        part = table.iloc[start : start + BATCH]
        t0 = time.perf_counter()
        image = np.stack([pixels(Path(p).read_bytes()) for p in part["photo"]])
        tokens = np.stack([encode(t) for t in part["text"]])
        preprocess_s += time.perf_counter() - t0
        model(image, tokens)
        inputs.append((image, tokens))
    total_s = time.perf_counter() - started
    started = time.perf_counter()
    for image, tokens in inputs:
        model(image, tokens)
    model_s = time.perf_counter() - started
    return {
        "rows": len(table),
        "rows_per_s": len(table) / total_s,
        "wall_s": total_s,
        "preprocess_rows_per_s_1_process": len(table) / preprocess_s,
        "model_only_rows_per_s": len(table) / model_s,
        "inputs": inputs,
    }


def preprocess_pool(table: pd.DataFrame, artifacts: ModelArtifacts, workers: int) -> float:
    """Rows/s of photo preprocessing alone in the process pool direct mode uses."""
    spec = artifacts.image_spec
    chunks = [list(table["photo"].iloc[s : s + BATCH]) for s in range(0, len(table), BATCH)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(prepare_photos, chunks[:workers], [spec] * workers))  # start the workers
        started = time.perf_counter()
        list(pool.map(prepare_photos, chunks, [spec] * len(chunks)))
    return len(table) / (time.perf_counter() - started)


def triton_only(
    url: str,
    artifacts: ModelArtifacts,
    inputs: list[tuple[NDArray[Any], NDArray[Any]]],
    in_flight: int,
) -> float:
    """Rows/s of the combined ensemble alone: preprocessed batches over gRPC."""
    scorer = TritonScorer(url, artifacts)
    rows = sum(len(image) for image, _ in inputs)
    try:
        scorer._infer(
            Kind.combined, {contract.IMAGE: inputs[0][0], contract.TOKEN_IDS: inputs[0][1]}
        )  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(
                pool.map(
                    lambda batch: scorer._infer(
                        Kind.combined, {contract.IMAGE: batch[0], contract.TOKEN_IDS: batch[1]}
                    ),
                    inputs,
                )
            )
        return rows / (time.perf_counter() - started)
    finally:
        scorer.close()


def fbmr_score(table: Path, out: Path, target: list[str], extra: list[str]) -> dict[str, Any]:
    summary = out.with_suffix(".summary.json")
    command = [FBMR, "score", str(table), "--out", str(out), "--kind", "combined", "--overwrite",
               "--no-progress", "--summary-json", str(summary), *target, *extra]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    result: dict[str, Any] = json.loads(summary.read_text())
    return result


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    with Client(url) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("the facade exited")
            try:
                if client.ready().triton:
                    return
            except Exception:
                pass
            time.sleep(1)
    raise RuntimeError("the facade did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/real/prepared"))
    parser.add_argument("--repo", type=Path, default=Path("runs/real/model_repository"))
    parser.add_argument(
        "--repo-int8", type=Path, default=None, help="an INT8 export: the same runs on its files"
    )
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--limit", type=int, default=0, help="only the first N rows (0: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/score"))
    args = parser.parse_args()

    table_path = rows_table(args.data, args.splits.split(","), args.out / "rows.parquet")
    table = pd.read_parquet(table_path)
    if args.limit:
        table = table.iloc[: args.limit]
        table.to_parquet(table_path)
    workers = default_workers()
    results: dict[str, Any] = {
        "rows": len(table),
        "splits": args.splits,
        "cores": os.cpu_count(),
        "batch": BATCH,
        "load_before": os.getloadavg(),
    }
    print(f"{len(table)} rows ({args.splits}), {os.cpu_count()} cores", flush=True)

    results["float32"] = measure(args.repo, table_path, table, args.out / "float32", workers)
    if args.repo_int8:
        results["int8"] = measure(args.repo_int8, table_path, table, args.out / "int8", workers)
    # every ratio is to float32 bare onnxruntime, the limit of today's files on this machine
    reference = results["float32"]["bare_onnxruntime"]["rows_per_s"]
    precisions = [p for p in ("float32", "int8") if p in results]
    for precision in precisions:
        for mode in ("direct", "facade", "bare_onnxruntime"):
            figures = results[precision][mode]
            figures["ratio_to_float32_bare_onnxruntime"] = figures["rows_per_s"] / reference
    results["load_after"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for precision in precisions:
        for mode in ("direct", "facade", "bare_onnxruntime"):
            figures = results[precision][mode]
            print(
                f"{precision} {mode}: {figures['rows_per_s']:.1f} rows/s, "
                f"{figures['ratio_to_float32_bare_onnxruntime']:.2f} x float32 bare onnxruntime "
                f"({reference:.1f})"
            )


def measure(
    repo: Path, table_path: Path, table: pd.DataFrame, out: Path, workers: int
) -> dict[str, Any]:
    """Direct, facade and bare onnxruntime scoring of the rows with `repo`'s latest files, then
    where the time goes."""
    from fbmr.serving.triton.ports import TritonPorts, free_ports
    from fbmr.serving.triton.server import LocalTriton

    out.mkdir(parents=True, exist_ok=True)
    artifacts = ModelArtifacts.load(repo)
    results: dict[str, Any] = {"repo": str(repo)}
    ports = TritonPorts("127.0.0.1", *free_ports(3))
    (facade_port,) = free_ports(1)
    facade_url = f"http://127.0.0.1:{facade_port}"
    with ExitStack() as stack:
        stack.enter_context(LocalTriton(repo, ports, log_path=out / "triton.log"))
        facade = subprocess.Popen(
            [FBMR, "serve", "--triton-url", ports.grpc_url, "--repo", str(repo),
             "--port", str(facade_port)],
            stdout=(out / "facade.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

        def stop_facade() -> None:
            facade.terminate()
            facade.wait(30)

        stack.callback(stop_facade)
        wait_http(facade_url, facade)

        results["direct"] = fbmr_score(
            table_path, out / "direct.parquet",
            ["--triton-url", ports.grpc_url, "--repo", str(repo)], ["--batch-size", str(BATCH)],
        )  # fmt: skip
        results["facade"] = fbmr_score(
            table_path, out / "facade.parquet", ["--url", facade_url], ["--concurrency", "8"]
        )
        bare = bare_onnxruntime(table, artifacts, repo)
        inputs = bare.pop("inputs")
        results["bare_onnxruntime"] = bare
        results["parts"] = {
            "preprocess_rows_per_s_1_process": bare["preprocess_rows_per_s_1_process"],
            f"preprocess_rows_per_s_pool_{workers}": preprocess_pool(table, artifacts, workers),
            "onnxruntime_models_only_rows_per_s": bare["model_only_rows_per_s"],
            "triton_ensemble_only_rows_per_s_1_in_flight": triton_only(
                ports.grpc_url, artifacts, inputs, 1
            ),
            "triton_ensemble_only_rows_per_s_2_in_flight": triton_only(
                ports.grpc_url, artifacts, inputs, 2
            ),
        }
    return results


if __name__ == "__main__":
    main()
