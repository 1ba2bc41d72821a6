"""Soak: a running facade held at saturation for a long while (10 minutes by default) under the
traffic mix, with the resident memory of the facade and of Triton (the server and its
python-backend stubs) sampled every few seconds. Memory that grows beyond noise over the run is a
leak; the figures and a plot go to --out.

    uv run python bench/soak.py http://127.0.0.1:8080 --data runs/real/prepared \
        --facade-pid PID --triton-pid PID [--users 8] [--minutes 10] [--out DIR]

`bench/compare.sh` starts the servers it measures; for a soak, start them the same way
(`fbmr serve --with-triton ...`) and give their process ids.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from figures import plt, save
from load import run_step


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (0 when it is gone)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), 0)
        total += float(rss) / 1024
        todo += [int(c) for c in children]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (listings)")
    parser.add_argument("--facade-pid", type=int, required=True)
    parser.add_argument("--triton-pid", type=int, required=True)
    parser.add_argument("--users", type=int, default=8, help="concurrent users (saturation)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--out", type=Path, default=Path(f"runs/bench/soak-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.is_set():
            samples.append({
                "s": round(time.monotonic() - started, 1),
                "facade_mb": round(rss_mb(args.facade_pid), 1),
                "triton_mb": round(rss_mb(args.triton_pid), 1),
            })  # fmt: skip
            stop.wait(args.every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        figures = run_step(
            args.url, args.data, args.users, args.minutes * 60, 10.0, args.out / "soak", []
        )
    finally:
        stop.set()
        sampler.join()
    # the first minute is warm-up (caches, pools, allocator arenas); growth is judged after it
    settled = [s for s in samples if s["s"] >= 60] or samples
    summary = {
        "users": args.users,
        "minutes": args.minutes,
        "requests": figures.get("requests"),
        "failures": figures.get("failures"),
        "req_s": figures.get("req_s"),
        "p99_ms": figures.get("p99_ms"),
        **{
            f"{name}_mb_{when}": settled[index][f"{name}_mb"]
            for name in ("facade", "triton")
            for when, index in (("start", 0), ("end", -1))
        },
    }
    (args.out / "samples.json").write_text(json.dumps(samples, indent=1))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name in ("facade", "triton"):
        axis.plot([s["s"] / 60 for s in samples], [s[f"{name}_mb"] for s in samples], label=name)
    axis.set(xlabel="minutes", ylabel="resident memory (MiB)", title="Soak at saturation")
    axis.legend()
    save(figure, args.out / "soak-rss.png", dpi=110)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
