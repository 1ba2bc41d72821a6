"""CPU time per process over one command's run: where the cores went during a benchmark step.

    uv run python bench/cpu_share.py [--out cpu.json] -- COMMAND [ARGS...]

The user + system CPU seconds of every process on the machine are read before and after COMMAND
(psutil) and the differences summed per group: each Triton python-backend model's stub by its
model's name, tritonserver itself, the facade, the seed-style server, the command with its
children (the load generator, when COMMAND is bench/load.py), the rest. Printed beside the
wall time and the cores it had, so that a step measured at "0.8 x bare onnxruntime" can be
split into the models' own work, the facade's and the load generator's. Servers must run
before COMMAND starts and outlive it; the command's children are counted through its rusage,
as they are gone by the second reading.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

COMMAND = "the command (and its children)"
Key = tuple[int, float]  # (pid, create time): a pid reused between readings is another process


def group_of(cmdline: list[str]) -> str:
    """The group a process belongs to, from its command line."""
    joined = " ".join(cmdline)
    if "triton_python_backend_stub" in joined:
        model = next((Path(a).parts[-3] for a in cmdline if a.endswith("model.py")), "?")
        return f"Triton model {model}"
    if (cmdline and Path(cmdline[0]).name == "tritonserver") or "bin/tritonserver" in joined:
        return "tritonserver"
    if "seed_style_app.py" in joined:
        return "seed-style server"
    if ("fbmr" in joined and " serve" in joined) or "uvicorn" in joined:
        return "facade"
    return "other"


def cpu_seconds() -> dict[Key, tuple[str, float]]:
    """Every process's group and CPU seconds so far."""
    seen: dict[Key, tuple[str, float]] = {}
    for process in psutil.process_iter(["cmdline", "cpu_times", "create_time"]):
        times = process.info["cpu_times"]
        if times is None:  # gone, or not ours to read
            continue
        key = (process.pid, process.info["create_time"])
        seen[key] = (group_of(process.info["cmdline"] or []), times.user + times.system)
    return seen


def children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuShare:
    """CPU seconds per group while one command ran."""

    command: list[str]
    returncode: int
    wall_s: float
    cores: int
    cpu_s: dict[str, float]

    def table(self) -> str:
        used = sum(self.cpu_s.values())
        lines = [
            f"{self.wall_s:.1f} s wall on {self.cores} cores; {used:.1f} CPU seconds used",
            "| group | CPU s | share of the cores |",
            "| --- | --- | --- |",
        ]
        capacity = self.wall_s * self.cores
        lines += [f"| {g} | {s:.2f} | {s / capacity:.1%} |" for g, s in self.cpu_s.items()]
        return "\n".join(lines)


def measure(command: list[str]) -> CpuShare:
    """Run `command`; the CPU seconds each group used meanwhile."""
    before, children = cpu_seconds(), children_seconds()
    started = time.perf_counter()
    returncode = subprocess.run(command, check=False).returncode
    wall = time.perf_counter() - started
    after = cpu_seconds()
    groups: dict[str, float] = {COMMAND: children_seconds() - children}
    for key, (group, seconds) in after.items():
        if key[0] != os.getpid():
            groups[group] = groups.get(group, 0.0) + seconds - before.get(key, (group, 0.0))[1]
    ranked = sorted(groups.items(), key=lambda item: -item[1])
    cpu = {g: round(s, 2) for g, s in ranked if s >= 0.01}
    return CpuShare(command, returncode, wall, len(os.sched_getaffinity(0)), cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    result = measure(command)
    print(result.table())
    if args.out:
        args.out.write_text(json.dumps(asdict(result), indent=2))
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
