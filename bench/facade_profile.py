"""Where the facade's CPU goes, per answered request: py-spy samples every thread of a running
facade while a load command runs, and the samples become CPU ms per request by layer (the HTTP
server, Starlette and FastAPI, form parsing, validation, photo decoding, tokenising, the gRPC
client, the access log and metrics, fbmr's own code) and by function.

    uv run python bench/facade_profile.py --url http://127.0.0.1:8080 --out runs/bench/prof \
        -- .venv/bin/python bench/load.py http://127.0.0.1:8080 CombinedUser \
           --data runs/real/prepared --users 8 --duration 30 --warmup 5 --out runs/bench/prof/load

The facade is the process listening on the URL's port (one worker; with several, profile one).
Its CPU seconds (psutil) and its answered requests (the `fbmr_requests_total` counter of
`/metrics`, status 200) are read before and after the command; py-spy's samples of threads that
were running (not idle) split those seconds. A sample goes to the innermost frame outside
Python's standard library, so a `json.dumps` in the access log counts as the access log.
Written: OUT/profile.md (the tables), OUT/profile.json and OUT/pyspy.txt (py-spy's collapsed
stacks, which flame-graph tools such as speedscope read).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil

# (what a frame's file path contains, the layer it belongs to), the first match wins
LAYERS = (
    ("fbmr/core/image", "photo decoding (fbmr.core.image, Pillow)"),
    ("/PIL/", "photo decoding (fbmr.core.image, Pillow)"),
    ("fbmr/core/text", "tokenising (fbmr.core.text)"),
    ("fbmr/core/wordpiece", "tokenising (fbmr.core.text)"),
    ("tritonclient/", "gRPC client (tritonclient, grpc)"),
    ("/grpc/", "gRPC client (tritonclient, grpc)"),
    ("google/protobuf", "gRPC client (tritonclient, grpc)"),
    ("multipart/", "form parsing (python-multipart)"),
    ("pydantic", "validation (pydantic)"),
    ("fastapi/", "FastAPI (routing, dependencies, responses)"),
    ("starlette/", "Starlette (requests, middleware, forms)"),
    ("uvicorn/", "HTTP server (uvicorn, h11; its run call holds the event loop)"),
    ("httptools/", "HTTP server (uvicorn, h11; its run call holds the event loop)"),
    ("h11/", "HTTP server (uvicorn, h11; its run call holds the event loop)"),
    ("prometheus_client/", "metrics (prometheus-client)"),
    ("fbmr/serving/http/middleware", "access log, body limit, metrics (middleware)"),
    ("fbmr/serving/metrics", "access log, body limit, metrics (middleware)"),
    ("fbmr/serving/request_context", "access log, body limit, metrics (middleware)"),
    ("fbmr/", "fbmr's own code"),
    ("numpy/", "numpy"),
    ("anyio/", "event loop and threads (asyncio, anyio)"),
)
EVENT_LOOP = "event loop and threads (asyncio, anyio)"
STDLIB = sysconfig.get_paths()["stdlib"]


def listening_pid(port: int) -> int:
    """The process listening on `port` on this machine."""
    for connection in psutil.net_connections(kind="tcp"):
        listens = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        if listens and connection.pid is not None:
            return int(connection.pid)
    raise SystemExit(f"nothing listens on port {port}")


def answered(url: str) -> float:
    """Requests the facade answered with 200 so far (its Prometheus counter)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("fbmr_requests_total{") and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def frame_file(frame: str) -> str:
    """The file of one py-spy frame, `function (path/to/file.py:line)`."""
    inside = frame.rsplit(" (", 1)[-1].rstrip(")")
    return inside.rsplit(":", 1)[0]


def layer_of(stack: list[str]) -> tuple[str, str]:
    """The layer and frame a sample counts for: the innermost frame outside the standard
    library (the event loop when every frame is in it)."""
    for frame in reversed(stack):
        path = frame_file(frame)
        if path.startswith(STDLIB) and "site-packages" not in path:
            continue
        for part, layer in LAYERS:
            if part in path:
                return layer, frame
        return "other libraries", frame
    return EVENT_LOOP, stack[-1] if stack else "?"


def summarise(collapsed: str, ms_per_sample: float, top: int) -> dict[str, object]:
    """Per layer and per function (the innermost non-stdlib frame), CPU ms per request."""
    layers: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        stack = [
            f for f in stack_text.split(";") if f and not f.startswith(("process ", "thread "))
        ]
        count = int(count_text)
        layer, frame = layer_of(stack)
        layers[layer] += count
        functions[f"{layer}: {frame}"] += count
        total += count

    def rows(counter: Counter[str], limit: int | None) -> list[dict[str, object]]:
        return [
            {"name": name, "share": n / total, "ms_per_request": n * ms_per_sample}
            for name, n in counter.most_common(limit)
        ]

    return {"samples": total, "layers": rows(layers, None), "functions": rows(functions, top)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the facade, e.g. http://127.0.0.1:8080")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the load to run")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the load command after --")
    args.out.mkdir(parents=True, exist_ok=True)
    url = args.url.rstrip("/")
    pid = listening_pid(urlparse(url).port or 80)
    collapsed = args.out / "pyspy.txt"
    spy_cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid)]
    spy_cmd += ["--rate", str(args.rate), "--nonblocking", "--full-filenames"]

    before = (answered(url), cpu_seconds(pid))
    spy = subprocess.Popen([*spy_cmd, "--format", "raw", "--output", str(collapsed)])
    try:
        subprocess.run(command, check=True)
    finally:
        after = (answered(url), cpu_seconds(pid))
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        spy.wait(60)
    requests = after[0] - before[0]
    cpu_ms = (after[1] - before[1]) * 1000
    if requests <= 0:
        raise SystemExit("the facade answered no request with 200 during the command")
    text = collapsed.read_text()
    samples = sum(int(line.rpartition(" ")[2]) for line in text.splitlines() if line.strip())
    summary = summarise(text, cpu_ms / requests / max(samples, 1), args.top)
    summary.update(requests=requests, cpu_ms_per_request=cpu_ms / requests, pid=pid)
    (args.out / "profile.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"facade pid {pid}: {requests:.0f} requests answered, "
        f"{cpu_ms / requests:.2f} CPU ms a request ({summary['samples']} samples)",
        "",
        "| layer | share of the facade's CPU | CPU ms a request |",
        "| --- | --- | --- |",
    ]
    for row in summary["layers"]:  # type: ignore[attr-defined]
        lines.append(f"| {row['name']} | {row['share']:.1%} | {row['ms_per_request']:.2f} |")
    lines += ["", "| function (innermost frame outside the standard library) | share | ms |"]
    lines += ["| --- | --- | --- |"]
    for row in summary["functions"]:  # type: ignore[attr-defined]
        name = str(row["name"]).replace("|", "\\|")
        lines.append(f"| {name} | {row['share']:.1%} | {row['ms_per_request']:.2f} |")
    (args.out / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
