"""The table and the plot of bench/compare.sh: every system of one side-by-side run, with its
ratios to bare onnxruntime.

    uv run python bench/compare.py runs/bench/compare-20250101-120000

Reads what compare.sh wrote into the folder (bare/, bare-end/, triton/, facade-*/, seed-*/,
the INT8 steps' bare-int8/, triton-int8/, facade-int8-combined/, and image_trunks/) and writes
compare.md, compare.json and compare.png there, with the CPU each process spent per request
in the facade steps that ran under bench/cpu_share.py. Ratios, all from the same run:
  throughput   req/s at 1 client / bare batch-1 rows/s; at 8 / bare batch-8 rows/s
  p50 (1)      bare batch-1 p50 / the system's p50 at 1 client (1 = as fast as bare)
  p99 (8)      the system's p99 at 8 clients / bare's p50 for one batch of 8 (the issue's target:
               at most 1.5)
INT8 rows have the same ratios, still to float32 bare onnxruntime, so 2 means twice float32's
limit. Where bare onnxruntime was also measured from the files (--from-files: the photos the
Locust steps send, decoded and tokenised on the clock), that row is in the table and the facade
is held to it as well, in a line below it: what the facade costs beyond the decoding it must do.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from figures import plt, save


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _locust(folder: Path) -> dict[int, dict[str, Any]]:
    summary = _load(folder / "summary.json")
    return {s["users"]: s for s in summary["steps"]} if summary else {}


def collect(out: Path) -> dict[str, Any]:
    """Per system: {1: {req_s, p50_ms, p99_ms}, 8: {...}} plus bare onnxruntime's batches."""
    bare = _load(out / "bare" / "bare_onnxruntime.json")
    if bare is None:
        raise SystemExit(f"{out}: no bare/bare_onnxruntime.json; run bench/compare.sh first")
    end = _load(out / "bare-end" / "bare_onnxruntime.json")
    # the reference is the mean of the measurements before and after the servers
    batches, drift = _before_and_after(bare["results"], end["results"] if end else None)
    systems: dict[str, dict[int, dict[str, Any]]] = {
        "bare onnxruntime (batch 1 / batch 8)": {
            1: {"req_s": batches[1]["rows_s"], **_lat(batches[1])},
            8: {"req_s": batches[8]["rows_s"], **_lat(batches[8])},
        }
    }
    files, files_drift = _before_and_after(
        bare["from_files"]["results"] if bare.get("from_files") else [],
        end["from_files"]["results"] if end and end.get("from_files") else None,
    )
    if files:
        systems[FROM_FILES] = {
            size: {"req_s": row["rows_s"], **_lat(row)} for size, row in files.items()
        }
    for suffix, precision in (("", ""), ("-int8", " INT8")):
        folder = out / f"bare{suffix}"
        if suffix and (bare_int8 := _load(folder / "bare_onnxruntime.json")):
            rows = {r["batch"]: r for r in bare_int8["results"]}
            systems["bare onnxruntime INT8 (batch 1 / batch 8)"] = {
                1: {"req_s": rows[1]["rows_s"], **_lat(rows[1])},
                8: {"req_s": rows[8]["rows_s"], **_lat(rows[8])},
            }
        triton = _load(out / f"triton{suffix}" / "latency.json")
        if triton:
            systems[f"Triton product_classifier{precision}, gRPC, preprocessed"] = {
                r["concurrency"]: {"req_s": r["throughput_rps"], **_lat(r)}
                for r in triton["results"]
            }
        names = {
            f"facade{suffix}-combined": f"facade{precision} /v1/predict/combined",
            f"facade{suffix}-mix": f"facade{precision}, the mix",
        }
        if not suffix:  # the seed style has one precision
            names["seed-combined"] = "seed-style /v1/predict/combined"
            names["seed-mix"] = "seed-style, the mix without similar"
        for folder_name, name in names.items():
            steps = _locust(out / folder_name)
            if steps:
                systems[name] = {
                    users: {
                        "req_s": s["req_s"],
                        "p50_ms": s["p50_ms"],
                        "p99_ms": s["p99_ms"],
                        "failures": s["failures"],
                        "loadgen_cpu_share": s.get("loadgen_cpu_share"),
                    }
                    for users, s in steps.items()
                }
    trunks = _load(out / "image_trunks" / "image_trunks.json")
    return {
        "bare": batches,
        "systems": systems,
        "bare_meta": bare,
        "drift": drift,
        "files_drift": files_drift,
        "trunks": trunks,
        "cpu": cpu_split(out),
    }


# bare onnxruntime answering from the photos and texts the facade is sent, decoding and
# tokenising on the clock (bare_onnxruntime.py --from-files)
FROM_FILES = "bare onnxruntime from the photo files, decoded on the clock"
FACADE = "facade /v1/predict/combined"


def _before_and_after(
    first: list[dict[str, Any]], later: list[dict[str, Any]] | None
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, dict[str, Any]]]]:
    """Bare onnxruntime's rows per batch size measured before the servers (`first`) and after
    them (`later`, where taken): batch size -> the mean of the two (the first alone where it was
    measured once), and batch size -> {"start", "end"} where it was measured twice."""
    keys = ("rows_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms")
    after = {r["batch"]: r for r in later or []}
    mean, drift = {}, {}
    for row in first:
        size = row["batch"]
        if size in after:
            drift[size] = {"start": row, "end": after[size]}
            row = {"batch": size, **{k: (row[k] + after[size][k]) / 2 for k in keys}}
        mean[size] = row
    return mean, drift


def from_files_line(systems: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """The facade against bare onnxruntime doing the same work from the same files: what the
    HTTP, Triton and thread hops cost beyond decoding and tokenising."""
    files, facade = systems.get(FROM_FILES), systems.get(FACADE)
    if not files or not facade or not {1, 8} <= files.keys() or not {1, 8} <= facade.keys():
        return []
    return [
        "",
        f"Against {FROM_FILES}: the facade at 8 users "
        f"{facade[8]['req_s'] / files[8]['req_s']:.2f} x its batch-8 throughput, at 1 user "
        f"{facade[1]['req_s'] / files[1]['req_s']:.2f} x its batch-1 rate; p50 at 1 user "
        f"{facade[1]['p50_ms'] / files[1]['p50_ms']:.2f} x its batch-1 p50, p99 at 8 users "
        f"{facade[8]['p99_ms'] / files[8]['p50_ms']:.2f} x its batch-8 p50.",
    ]


# The facade steps run once more under bench/cpu_share.py, and what they are called in the table
CPU_STEPS = {"facade-cpu-split": "float32 facade", "facade-int8-cpu-split": "INT8 facade"}


# cpu_share.py's name for the command it ran, which here is the load generator
CPU_LABELS = {"the command (and its children)": "the load generator (bench/load.py, Locust)"}


def cpu_split(out: Path) -> dict[str, dict[str, float]]:
    """Per facade step at 8 users: CPU milliseconds per answered request of each process group.
    The CPU covers the warm-up as well as the measured seconds, so requests are counted over
    both at the measured rate."""
    settings = dict(
        line.split("=", 1) for line in _read(out / "settings.txt").splitlines() if "=" in line
    )
    seconds = float(settings.get("duration", 0)) + float(settings.get("warmup", 0))
    split = {}
    for step, name in CPU_STEPS.items():
        share, steps = _load(out / step / "cpu.json"), _locust(out / step)
        if share and steps and seconds:
            requests = steps[max(steps)]["req_s"] * seconds
            split[name] = {g: 1000 * cpu / requests for g, cpu in share["cpu_s"].items()}
    return split


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _lat(row: dict[str, Any]) -> dict[str, Any]:
    return {"p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"]}


def ratios(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    bare = data["bare"]
    out = {}
    for name, levels in data["systems"].items():
        one, eight = levels.get(1), levels.get(8)
        # a mix's req/s counts cheap text requests too: no throughput ratio to a classifier's
        mix = "mix" in name
        out[name] = {
            "throughput_1": one["req_s"] / bare[1]["rows_s"] if one else math.nan,
            "throughput_8": eight["req_s"] / bare[8]["rows_s"] if eight and not mix else math.nan,
            "p50_1": one["p50_ms"] / bare[1]["p50_ms"] if one else math.nan,
            "p99_8": eight["p99_ms"] / bare[8]["p50_ms"] if eight else math.nan,
        }
    return out


def _f(value: float | None, fmt: str, unit: str = "") -> str:
    return "—" if value is None or math.isnan(value) else f"{value:{fmt}}{unit}"


def markdown(data: dict[str, Any], rates: dict[str, Any]) -> str:
    bare = data["bare"]
    lines = [
        "| system | 1 client: p50, req/s | 8 clients: req/s, p99 | throughput ratio "
        "(1 / 8 clients) | p50 (1) / bare batch-1 p50 | p99 (8) / bare batch-8 p50 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, levels in data["systems"].items():
        one, eight, r = levels.get(1), levels.get(8), rates[name]
        first = f"{_f(one['p50_ms'], '.1f', ' ms')}, {_f(one['req_s'], '.1f')}" if one else "—"
        second = (
            f"{_f(eight['req_s'], '.1f')}, {_f(eight['p99_ms'], '.0f', ' ms')}" if eight else "—"
        )
        lines.append(
            f"| {name} | {first} | {second} | {_f(r['throughput_1'], '.2f')} / "
            f"{_f(r['throughput_8'], '.2f')} | {_f(r['p50_1'], '.2f')} | {_f(r['p99_8'], '.2f')} |"
        )
    lines += _drift_lines(
        "Bare onnxruntime before the servers and after them (the reference is the mean):",
        data["drift"],
    )
    lines += _drift_lines(
        "Bare onnxruntime from the photo files, before the servers and after them:",
        data.get("files_drift", {}),
    )
    b32 = bare.get(32)
    if b32:
        lines += [
            "",
            f"Bare onnxruntime at batch 32: {b32['rows_s']:.1f} rows/s, "
            f"{b32['p50_ms']:.0f} ms per batch (p50). Batch 8: {bare[8]['p50_ms']:.0f} ms per "
            f"batch (p50), {bare[8]['p99_ms']:.0f} ms (p99).",
        ]
    lines += from_files_line(data["systems"])
    lines += int8_targets(data["systems"], bare)
    if data.get("cpu"):
        lines += ["", *cpu_table(data["cpu"])]
    if data.get("trunks"):
        lines += ["", *trunk_table(data["trunks"])]
    return "\n".join(lines) + "\n"


def _drift_lines(title: str, drift: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """Each batch size's rows/s and p50 before the servers and after them, under `title`."""
    if not drift:
        return []
    return ["", title] + [
        f"batch {size}: {d['start']['rows_s']:.1f} then {d['end']['rows_s']:.1f} rows/s, "
        f"p50 {d['start']['p50_ms']:.0f} then {d['end']['p50_ms']:.0f} ms per batch."
        for size, d in sorted(drift.items())
    ]


def cpu_table(split: dict[str, dict[str, float]]) -> list[str]:
    """Where the cores went at 8 users: CPU ms per request of each process group, per step."""
    names = list(split)
    groups = sorted({g for figures in split.values() for g in figures},
                    key=lambda g: -max(f.get(g, 0.0) for f in split.values()))  # fmt: skip
    lines = [
        "Where the cores went at 8 users (bench/cpu_share.py; CPU ms per answered request):",
        "",
        f"| process | {' | '.join(names)} |",
        f"| --- |{' --- |' * len(names)}",
    ]
    for group in groups:
        cells = " | ".join(_f(split[n].get(group), ".1f") for n in names)
        lines.append(f"| {CPU_LABELS.get(group, group)} | {cells} |")
    totals = " | ".join(f"{sum(split[n].values()):.1f}" for n in names)
    return [*lines, f"| all | {totals} |"]


def int8_targets(
    systems: dict[str, dict[int, dict[str, Any]]], bare: dict[int, dict[str, Any]]
) -> list[str]:
    """The INT8 facade against float32: throughput at 8 users over float32 bare onnxruntime at
    batch 8 (target at least 1.8), and its p50 at 1 user over the float32 facade's (at most 0.7)."""
    int8, float32 = (
        systems.get("facade INT8 /v1/predict/combined"),
        systems.get(FACADE),
    )
    if not int8 or 8 not in int8 or 1 not in int8:
        return []
    lines = [
        "",
        f"INT8 facade at 8 users: {int8[8]['req_s'] / bare[8]['rows_s']:.2f} x float32 bare "
        "onnxruntime's batch-8 throughput (target at least 1.8).",
    ]
    if float32 and 1 in float32:
        lines.append(
            f"INT8 facade p50 at 1 user: {int8[1]['p50_ms'] / float32[1]['p50_ms']:.2f} x the "
            "float32 facade's (target at most 0.7)."
        )
    return lines


def trunk_table(trunks: dict[str, Any]) -> list[str]:
    """The image encoder alone per trunk (bench/image_trunks.py), with each trunk's cost
    relative to the first's (ResNet-50)."""
    rows = trunks["trunks"]
    first = next(iter(rows.values()))
    lines = [
        f"Image encoder alone at {trunks['image_size']} px, per trunk (same photos, taking "
        "turns); ms per batch (p50), and the first trunk's time over this one's:",
        "",
        "| trunk | weights | parameters | onnxruntime batch 1 | onnxruntime batch 8 "
        "| PyTorch eager batch 8 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        cells = []
        for runtime, batch in (("onnxruntime", "1"), ("onnxruntime", "8"), ("pytorch", "8")):
            ms = row[runtime][batch]["p50_ms"]
            cells.append(f"{ms:.1f} ms ({first[runtime][batch]['p50_ms'] / ms:.1f} x)")
        lines.append(
            f"| {name} | {row['weights']} | {row['parameters'] / 1e6:.1f} M | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def plot(data: dict[str, Any], path: Path) -> None:
    systems = data["systems"]
    # the mixes' req/s counts cheap text requests: in the table only
    names = [n for n in systems if "mix" not in n]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.38
    for offset, level in ((-width / 2, 1), (width / 2, 8)):
        xs = [i + offset for i in range(len(names))]
        left.bar(
            xs,
            [systems[n].get(level, {}).get("req_s", 0) for n in names],
            width,
            label=f"{level} client{'s' if level > 1 else ''}",
        )
        right.bar(
            xs,
            [systems[n].get(level, {}).get("p50_ms" if level == 1 else "p99_ms", 0) for n in names],
            width,
            label="p50, 1 client" if level == 1 else "p99, 8 clients",
        )
    for axis, label in ((left, "requests (rows) per second"), (right, "latency (ms)")):
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels([n.split(",")[0] for n in names], rotation=20, ha="right", fontsize=8)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, axis="y")
        axis.legend()
    save(figure, path, "Serving side by side: same run, same listings, same machine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder bench/compare.sh wrote")
    args = parser.parse_args()
    data = collect(args.out)
    rates = ratios(data)
    table = markdown(data, rates)
    (args.out / "compare.md").write_text(table)
    (args.out / "compare.json").write_text(
        json.dumps({"systems": data["systems"], "ratios": rates}, indent=2) + "\n"
    )
    plot(data, args.out / "compare.png")
    print(table)


if __name__ == "__main__":
    main()
