"""Locust, headless, at steps of concurrent users against a running facade (or the seed-style
server): Locust's own CSV and HTML report per step, then one summary (users, req/s, p50, p95,
p99, failures) as markdown and JSON, and a plot of throughput and p99 against users.

    uv run python bench/load.py http://127.0.0.1:8080 --data runs/real/prepared
    uv run python bench/load.py URL --data DIR --users 1 8 --duration 40 --warmup 10 \
        --out runs/bench/load-facade CombinedUser      # one kind of request only

`bash bench/load.sh URL` runs it with the defaults. Each step is one Locust process: `--warmup`
seconds whose requests are left out (connections, first-call costs, queues filling), then
`--duration` seconds measured. User classes (bench/locustfile.py): CombinedUser, TextUser,
ImageUser, SimilarUser; all four (the traffic mix) when none is named.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
LOCUSTFILE = BENCH / "locustfile.py"
DEFAULT_USERS = (1, 2, 4, 8, 16, 32)


def locust_binary() -> list[str]:
    """Locust from this interpreter's environment."""
    beside = Path(sys.executable).with_name("locust")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "locust"]


def parse_stats(path: Path) -> dict[str, dict[str, float]]:
    """Locust's PREFIX_stats.csv as {name: {req_s, p50_ms, p95_ms, p99_ms, requests, failures}}."""
    rows = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):

            def number(column: str, row: dict[str, str] = row) -> float:
                value = row.get(column, "")
                return float(value) if value not in ("", "N/A") else float("nan")

            rows[row["Name"]] = {
                "requests": int(number("Request Count")),
                "failures": int(number("Failure Count")),
                "req_s": number("Requests/s"),
                "p50_ms": number("50%"),
                "p95_ms": number("95%"),
                "p99_ms": number("99%"),
                "mean_ms": number("Average Response Time"),
            }
    return rows


def run_step(
    url: str,
    data: Path,
    users: int,
    duration: float,
    warmup: float,
    prefix: Path,
    user_classes: list[str],
    listings: int = 128,
) -> dict[str, Any]:
    """One Locust run at `users` concurrent users; its aggregated figures and per endpoint."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    command = [
        *locust_binary(),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{round(warmup + duration)}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--data",
        str(data),
        "--listings",
        str(listings),
        "--warmup",
        str(warmup),
        "--loglevel",
        "WARNING",
        *user_classes,
    ]
    started = time.monotonic()
    log = Path(f"{prefix}.log")
    with log.open("w") as out:
        # Locust exits 1 when any request failed; the failures are in the figures
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.is_file():
        raise RuntimeError(f"locust wrote no statistics (exit {done.returncode}); see {log}")
    stats = parse_stats(stats_file)
    loadgen_file = Path(f"{prefix}_loadgen.json")
    loadgen = json.loads(loadgen_file.read_text()) if loadgen_file.is_file() else {}
    return {
        "users": users,
        **stats.get("Aggregated", {}),
        "endpoints": {k: v for k, v in stats.items() if k != "Aggregated"},
        "loadgen_cpu_share": loadgen.get("cpu_share_of_one_core"),
        "loadgen_cpu_ms_per_request": loadgen.get("cpu_ms_per_request"),
        "wall_s": round(time.monotonic() - started, 1),
    }


def markdown(rows: list[dict[str, Any]], title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| users | req/s | p50 | p95 | p99 | requests | failures "
        "| load generator (share of a core) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        share = r.get("loadgen_cpu_share")
        lines.append(
            f"| {r['users']} | {r['req_s']:.1f} | {r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms "
            f"| {r['p99_ms']:.0f} ms | {r['requests']} | {r['failures']} "
            f"| {share:.2f} |"
            if share is not None
            else f"| {r['users']} | {r['req_s']:.1f} | {r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms "
            f"| {r['p99_ms']:.0f} ms | {r['requests']} | {r['failures']} | — |"
        )
    return "\n".join(lines) + "\n"


def plot(series: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """Throughput and p99 against users, one line per series."""
    from figures import plt, save  # here: the statistics parser is used without matplotlib

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in series.items():
        users = [r["users"] for r in rows]
        left.plot(users, [r["req_s"] for r in rows], marker="o", label=name)
        right.plot(users, [r["p99_ms"] for r in rows], marker="o", label=name)
    for axis, label in ((left, "requests/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent users")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    save(figure, path, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL of the facade (or the seed-style server)")
    parser.add_argument(
        "user_classes", nargs="*", help="Locust user classes (default: all four, the mix)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("FBMR_BENCH_DATA", "runs/real/prepared")),
        help="prepared dataset whose listings are sent (default $FBMR_BENCH_DATA)",
    )
    parser.add_argument("--users", type=int, nargs="+", default=list(DEFAULT_USERS))
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds per step")
    parser.add_argument("--listings", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="default runs/bench/load-<time>")
    args = parser.parse_args()
    out = args.out or Path("runs/bench") / time.strftime("load-%Y%m%d-%H%M%S")

    rows = []
    for users in args.users:
        row = run_step(
            args.url,
            args.data,
            users,
            args.duration,
            args.warmup,
            out / f"u{users}",
            args.user_classes,
            args.listings,
        )
        rows.append(row)
        print(
            f"{users:>3} users: {row['req_s']:.1f} req/s, p50 {row['p50_ms']:.0f} ms, "
            f"p99 {row['p99_ms']:.0f} ms, {row['failures']} failures of {row['requests']}",
            flush=True,
        )
    what = " + ".join(args.user_classes) or "the mix (combined 50, text 20, image 15, similar 15)"
    title = f"{args.url}: {what}"
    (out / "summary.json").write_text(
        json.dumps({"url": args.url, "classes": what, "steps": rows}, indent=2) + "\n"
    )
    (out / "summary.md").write_text(markdown(rows, title))
    plot({what: rows}, out / "summary.png", title)
    print(markdown(rows, title))
    print(f"reports: {out}/u*.html, summary: {out}/summary.md, plot: {out}/summary.png")


if __name__ == "__main__":
    main()
