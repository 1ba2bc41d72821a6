"""bench/compare.sh end to end on the tiny run, with every step shortened: a change in training,
export or serving that breaks a step of the benchmark (the seed-style server loading the run's
fusion, the facade's CPU split) fails here rather than in the next measurement. The figures
themselves mean nothing at these durations; what is checked is that every system answered
without a failure and the table and the plot were written.

The INT8 steps run the same commands on an INT8 export (a third of the script's time): here they
are left out (INT8=0), the INT8 export being served is tests/export/test_quantize.py's, and the
INT8 rows of the table are checked on the float32 steps' output filed under the INT8 names."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, run_script

# compare.sh starts Triton and the facade, then the seed style: its own limit is 600 s, the
# test's above it
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
# compare.sh's ports: Triton at BASE, BASE+1, BASE+2, the facade at +80, the seed style at +90
OFFSETS = (0, 1, 2, 80, 90)
# compare.sh's output folders: float32's, and the INT8 steps' of the same measurement
INT8_FOLDERS = {
    "bare": "bare-int8",
    "triton": "triton-int8",
    "facade-combined": "facade-int8-combined",
    "facade-cpu-split": "facade-int8-cpu-split",
}
INT8_SYSTEMS = (
    "bare onnxruntime INT8 (batch 1 / batch 8)",
    "Triton product_classifier INT8, gRPC, preprocessed",
    "facade INT8 /v1/predict/combined",
)


def _free_base_port() -> int:
    for base in range(20_000, 40_000, 97):
        sockets = []
        try:
            for offset in OFFSETS:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports for bench/compare.sh")


def test_compare_runs_every_step_on_a_tiny_run(tiny_run, demo_prepared, cpu_repository, tmp_path):
    out = tmp_path / "compare"
    env = {
        "DATA": str(demo_prepared),
        "REPO": str(cpu_repository),
        "INT8": "0",
        "DURATION": "2",
        "WARMUP": "1",
        "REQUESTS": "16",
        "BARE_SECONDS": "0.5",
        "TRUNKS": "0",  # builds ResNet-50 and Lite0 at 224 px: minutes, and training-independent
        "INDEX_SPLITS": "val",
        "BASE_PORT": str(_free_base_port()),
    }
    run_script("bench/compare.sh", str(tiny_run), str(out), env=env, timeout=600)
    systems = json.loads((out / "compare.json").read_text())["systems"]
    expected = {
        "bare onnxruntime (batch 1 / batch 8)",
        "bare onnxruntime from the photo files, decoded on the clock",
        "Triton product_classifier, gRPC, preprocessed",
        "facade /v1/predict/combined",
        "facade, the mix",
        "seed-style /v1/predict/combined",
        "seed-style, the mix without similar",
    }
    assert set(systems) == expected
    for name, levels in systems.items():
        for users, figures in levels.items():
            assert figures["req_s"] > 0 and math.isfinite(figures["p99_ms"]), (name, users)
            assert figures.get("failures", 0) == 0, (name, users, figures)
    table = (out / "compare.md").read_text()
    assert "INT8" not in table
    assert "| Triton model image_encoder |" in table  # the CPU split of the facade steps
    # the facade held to bare onnxruntime decoding the same photo files
    assert "Against bare onnxruntime from the photo files" in table
    assert (out / "compare.png").stat().st_size > 10_000

    # the INT8 steps' folders, as compare.sh names them: the table gains their rows
    for float32, int8 in INT8_FOLDERS.items():
        shutil.copytree(out / float32, out / int8)
    subprocess.run([sys.executable, "bench/compare.py", str(out)], cwd=REPO_ROOT, check=True)
    systems = json.loads((out / "compare.json").read_text())["systems"]
    assert set(systems) == expected | set(INT8_SYSTEMS)
    table = (out / "compare.md").read_text()
    assert "INT8 facade at 8 users" in table
    assert "| process | float32 facade | INT8 facade |" in table
