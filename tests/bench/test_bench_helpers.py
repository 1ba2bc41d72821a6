"""The load tests' answer checks and Locust statistics parser (bench/answers.py, load.py), the
data types of the benchmarks' tensors (bench/common.py), and the CPU accounting per process
(bench/cpu_share.py), the split of py-spy's samples by layer (bench/facade_profile.py), and the
sellers' photos compare.sh sends by default (bench/sellers_photos.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import np_to_triton_dtype

from fbmr.core.contract import Datatype

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from answers import check_prediction, check_similar
from common import triton_datatype
from cpu_share import COMMAND, group_of, measure
from facade_profile import STDLIB, summarise
from load import parse_stats
from sellers_photos import sellers_photos

CLASSES = frozenset({"Phones", "Office", "Sports"})


def test_a_right_prediction_passes() -> None:
    body = {"pred": "Office", "classes": ["Office", "Phones", "Sports"], "probabilities": [0.5] * 3}
    assert check_prediction(200, body, CLASSES) is None
    assert check_prediction(200, body, None) is None


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (503, {"error": "model server unavailable"}, "HTTP 503"),
        (200, None, "not a JSON object"),
        (200, {"pred": "Office", "classes": []}, "no classes"),
        (200, {"pred": "Toys", "classes": ["Office", "Phones", "Sports"]}, "not among classes"),
        (200, {"pred": "Office", "classes": ["Office", "Phones", "Toys"]}, "label map"),
        (200, {"pred": "Phones", "classes": ["Office", "Phones", "Sports"]}, "not the first"),
    ],
)
def test_a_wrong_prediction_is_a_failure(status: int, body: object, why: str) -> None:
    assert why in check_prediction(status, body, CLASSES)


def test_similar_answers() -> None:
    listing = {"id": "1", "category": "Office", "name": "desk", "score": 0.9}
    assert check_similar(200, {"listings": [listing] * 3}, k=3) is None
    assert "4 listings" in check_similar(200, {"listings": [listing] * 4}, k=3)
    assert check_similar(200, {"listings": []}, k=3) == "no listings"
    assert "without id" in check_similar(200, {"listings": [{"id": "1"}]}, k=3)
    assert check_similar(501, {"error": "no index"}, k=3) == "HTTP 501"


def test_locust_statistics_are_read_per_endpoint_and_aggregated(tmp_path: Path) -> None:
    header = (
        '"Type","Name","Request Count","Failure Count","Median Response Time",'
        '"Average Response Time","Min Response Time","Max Response Time",'
        '"Average Content Size","Requests/s","Failures/s","50%","66%","75%","80%","90%",'
        '"95%","98%","99%","99.9%","99.99%","100%"'
    )
    rows = [
        "POST,/v1/predict/combined,100,2,55,57.5,40,300,700,10.5,0.2,"
        "55,60,62,65,70,80,90,120,300,300,300",
        ",Aggregated,100,2,55,57.5,40,300,700,10.5,0.2,55,60,62,65,70,80,90,120,300,300,300",
    ]
    path = tmp_path / "u8_stats.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    stats = parse_stats(path)
    assert stats["Aggregated"] == {
        "requests": 100,
        "failures": 2,
        "req_s": 10.5,
        "p50_ms": 55.0,
        "p95_ms": 80.0,
        "p99_ms": 120.0,
        "mean_ms": 57.5,
    }
    assert stats["/v1/predict/combined"]["p99_ms"] == 120.0


@pytest.mark.parametrize("datatype", list(Datatype))
def test_each_datatype_is_spelt_as_triton_and_numpy_spell_it(datatype: Datatype) -> None:
    array = np.zeros(1, np.dtype(datatype.numpy))
    assert triton_datatype(array) == datatype == np_to_triton_dtype(array.dtype)
    assert mc.DataType.Value(datatype.config) and Datatype.of_config(datatype.config) is datatype


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        (
            ["/venv/lib/python3.11/site-packages/pytriton/tritonserver/backends/python/"
             "triton_python_backend_stub", "/repo/image_encoder/3/model.py", "1", "/dev/shm/x"],
            "Triton model image_encoder",
        ),
        (["/venv/lib/site-packages/pytriton/tritonserver/bin/tritonserver", "--model-repository",
          "/repo"], "tritonserver"),
        (["/venv/bin/python", "/venv/bin/fbmr", "serve", "--with-triton"], "facade"),
        (["python", "bench/seed_style_app.py", "runs/run"], "seed-style server"),
        (["bash"], "other"),
    ],
)  # fmt: skip
def test_processes_are_grouped_by_what_they_serve(cmdline, group) -> None:
    assert group_of(cmdline) == group


def test_the_cpu_of_a_command_and_its_children_is_counted() -> None:
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    result = measure(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])",
        ]
    )
    assert result.returncode == 0
    assert 0.5 <= result.cpu_s[COMMAND] <= result.wall_s * result.cores
    assert "| the command (and its children) |" in result.table()


def test_a_profile_sample_counts_for_its_innermost_frame_outside_the_standard_library() -> None:
    site = "/venv/lib/python3.11/site-packages"
    loop = f"BaseEventLoop._run_once ({STDLIB}/asyncio/base_events.py:1922)"
    decode = f"ImageFile.load ({site}/PIL/ImageFile.py:425)"
    log = f"dumps ({STDLIB}/json/__init__.py:231)"
    middleware = "access_log (/src/serving/fbmr/serving/http/middleware.py:80)"
    collapsed = "\n".join(
        [
            f"process 1;thread 2;{loop};image_pixels (/src/core/fbmr/core/image.py:350);{decode} 6",
            f"{loop};{middleware};{log} 3",
            f"{loop} 1",
        ]
    )
    summary = summarise(collapsed, ms_per_sample=0.5, top=10)
    layers = {row["name"]: row["ms_per_request"] for row in summary["layers"]}
    assert summary["samples"] == 10
    assert layers == {
        "photo decoding (fbmr.core.image, Pillow)": 3.0,
        "access log, body limit, metrics (middleware)": 1.5,  # json inside it counts for it
        "event loop and threads (asyncio, anyio)": 0.5,  # only the standard library: the loop
    }
    assert summary["functions"][0]["name"].endswith(decode)


def test_compare_sends_sellers_photos_where_the_source_has_them(tmp_path: Path) -> None:
    source, prepared = tmp_path / "sample", tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.json").write_text(f'{{"source": "{source.as_uri()}"}}')
    source.mkdir()
    assert sellers_photos(prepared) is None  # no raw_images/: the prepared photos are sent
    (source / "raw_images").mkdir()
    assert sellers_photos(prepared) is None  # an empty one too
    (source / "raw_images" / "a.jpg").write_bytes(b"x")
    assert sellers_photos(prepared) == source / "raw_images"
    (prepared / "manifest.json").write_text('{"source": "s3://bucket/sample"}')
    assert sellers_photos(prepared) is None
