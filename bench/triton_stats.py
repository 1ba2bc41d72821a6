"""Where the time goes inside Triton: per model, how many requests, in how many executions
(the average batch dynamic batching formed), and the average time a request spent queued and in
each compute phase. Taken as the difference between two snapshots of Triton's statistics, so it
covers exactly what ran in between (a Locust step, say).

    uv run python bench/triton_stats.py snapshot --url 127.0.0.1:8001 --out before.json
    ... run the load ...
    uv run python bench/triton_stats.py diff before.json --url 127.0.0.1:8001 [--markdown]

Ensembles report their end-to-end time; composing models report their own, so the gap between an
ensemble's time and the sum of its steps' is what the ensemble scheduling and the hops between
models cost.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from fbmr.core.contract import DEFAULT_TRITON_URL

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def snapshot(url: str) -> dict[str, dict[str, float]]:
    """Cumulative counts and nanoseconds per model (all versions added up)."""
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(as_json=True)
    out: dict[str, dict[str, float]] = {}
    for model in stats.get("model_stats", []):
        entry = out.setdefault(
            model["name"], {"requests": 0.0, "executions": 0.0, **{p: 0.0 for p in PHASES}}
        )
        inference = model.get("inference_stats", {})
        entry["requests"] += float(inference.get("success", {}).get("count", 0))
        entry["executions"] += float(model.get("execution_count", 0))
        for phase in PHASES:
            entry[phase] += float(inference.get(phase, {}).get("ns", 0))
    return out


def difference(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Per model that ran in between: requests, average batch, milliseconds per request."""
    rows = []
    for name, now in sorted(after.items()):
        then = before.get(name, {})
        requests = now["requests"] - then.get("requests", 0.0)
        if requests <= 0:
            continue
        executions = now["executions"] - then.get("executions", 0.0)
        row: dict[str, Any] = {
            "model": name,
            "requests": int(requests),
            "avg_batch": round(requests / executions, 2) if executions else None,
        }
        for phase in PHASES:
            row[f"{phase}_ms"] = round((now[phase] - then.get(phase, 0.0)) / requests / 1e6, 2)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    header = ["model", "requests", "avg_batch", *(f"{p}_ms" for p in PHASES)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["snapshot", "diff"])
    parser.add_argument("before", nargs="?", type=Path, help="diff: the earlier snapshot")
    parser.add_argument("--url", default=DEFAULT_TRITON_URL, help="Triton gRPC host:port")
    parser.add_argument("--out", type=Path, help="snapshot: where to write it")
    parser.add_argument("--markdown", action="store_true", help="diff: a markdown table")
    args = parser.parse_args()
    now = snapshot(args.url)
    if args.command == "snapshot":
        text = json.dumps(now, indent=2)
        args.out.write_text(text) if args.out else print(text)
        return
    if args.before is None:
        parser.error("diff needs the earlier snapshot")
    rows = difference(json.loads(args.before.read_text()), now)
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
