"""The facade end to end: real tritonserver, real FAISS, demo data, over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    EMBED_PATH,
    MAX_PHOTOS,
    PREDICT_PATHS,
    PREDICT_TEXT_PATH,
    ErrorCode,
    Kind,
)
from fbmr.core.pooling import pool_embeddings, pool_probabilities
from fbmr.serving.index.catalogue import build_catalogue_index
from fbmr.serving.triton.server import LocalTriton, TritonPorts, alive
from tests.helpers import assert_error, encode, free_ports, running_facade, split_listings


@pytest.fixture(scope="module")
def queries(demo_prepared):
    """Test-split listings (not in the index): photo bytes, text, category."""
    return split_listings(demo_prepared, "test")


def _each_kind(facade, photo: bytes, text: str, path: str | None = None) -> dict:
    """One listing POSTed as a photo, a text and both (form fields): to `path`, or to each kind's
    predict route; the answers by kind."""
    form = {"photo": ("p.jpg", photo)}
    sent = {Kind.image: {"files": form}, Kind.text: {"data": {"text": text}}}
    sent[Kind.combined] = {**sent[Kind.image], **sent[Kind.text]}
    return {kind.value: facade.post(path or PREDICT_PATHS[kind], **sent[kind]) for kind in Kind}


def test_predictions_rank_every_category_and_beat_chance(facade, queries, cpu_repository):
    classes = set(ModelArtifacts.load(cpu_repository).labels.classes)
    correct = {"image": 0, "text": 0, "combined": 0}
    for photo, text, label in queries:
        answers = _each_kind(facade, photo, text)
        # the text route reads JSON as well as the form field, to the same answer
        assert facade.post(PREDICT_TEXT_PATH, json={"text": text}).json() == answers["text"].json()
        for kind, response in answers.items():
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body["classes"]) == classes and body["pred"] == body["classes"][0]
            assert body["probabilities"] == sorted(body["probabilities"], reverse=True)
            assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
            # a listing's own words are mostly ones training saw; a photo alone has no text
            known = body["known_words"]
            assert known is None if kind == "image" else 0.5 < known <= 1, (kind, known)
            correct[kind] += body["pred"] == label
    # text the model cannot read: still an answer, but one that says it is a guess
    unread = facade.post(PREDICT_TEXT_PATH, json={"text": "\U0001f6cb\ufe0f \U0001f525"})
    assert unread.status_code == 200 and unread.json()["known_words"] == 0.0
    chance = len(queries) / len(classes)
    assert all(c > 3 * chance for c in correct.values()), (correct, len(queries))


def test_a_png_under_a_jpg_name_is_read_by_its_content(facade):
    # a picture with structure, so that a misread photo would change the answer
    picture = Image.effect_mandelbrot((96, 72), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    answers = [
        facade.post("/v1/predict/image", files={"photo": (name, data, "image/jpeg")})
        for name, data in (
            ("photo.jpg", encode(picture, "PNG")),
            ("photo.png", encode(picture, "PNG")),
        )
    ]
    for response in answers:
        assert response.status_code == 200, response.text
    assert answers[0].json() == answers[1].json()


def test_a_listings_photos_are_pooled_into_one_answer(facade, queries):
    """Two `photo` parts: the answer is the two one-photo answers pooled as fbmr.core.pooling
    pools them (independent of which photo comes first); past MAX_PHOTOS a 422 that names it."""
    (first, text, _), (second, _, _) = queries[0], queries[1]
    for path, fields in (
        (PREDICT_PATHS[Kind.image], {}),
        (PREDICT_PATHS[Kind.combined], {"text": text}),
    ):
        alone = [
            _by_class(facade.post(path, files={"photo": ("p.jpg", photo)}, data=fields))
            for photo in (first, second)
        ]
        both = [
            facade.post(path, files=[("photo", ("a.jpg", a)), ("photo", ("b.jpg", b))], data=fields)
            for a, b in ((first, second), (second, first))
        ]
        classes = list(alone[0])
        expected = pool_probabilities(np.array([[one[c] for c in classes] for one in alone]))
        for response in both:
            pooled = _by_class(response)
            np.testing.assert_allclose([pooled[c] for c in classes], expected, atol=1e-5)
        assert max(expected) < max(max(a.values()) for a in alone) or alone[0] == alone[1]
    embedded = facade.post(
        EMBED_PATH, files=[("photo", ("a.jpg", first)), ("photo", ("b.jpg", second))]
    )
    singles = [
        facade.post(EMBED_PATH, files={"photo": ("p.jpg", photo)}).json()["embedding"]
        for photo in (first, second)
    ]
    np.testing.assert_allclose(
        embedded.json()["embedding"], pool_embeddings(np.array(singles)), atol=1e-5
    )
    many = [("photo", (f"{i}.jpg", first)) for i in range(MAX_PHOTOS + 1)]
    refused = facade.post(PREDICT_PATHS[Kind.image], files=many)
    assert_error(refused, 422, f"at most {MAX_PHOTOS}", code=ErrorCode.too_many_photos)


def _by_class(response) -> dict[str, float]:
    assert response.status_code == 200, response.text
    body = response.json()
    return dict(zip(body["classes"], body["probabilities"], strict=True))


def test_embeddings_have_the_kind_of_the_query(facade, queries):
    photo, text, _ = queries[0]
    kinds = _each_kind(facade, photo, text, EMBED_PATH)
    for kind, response in kinds.items():
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == kind
        assert len(body["embedding"]) > 0 and np.isfinite(body["embedding"]).all()


def test_similar_listings_share_the_query_category(facade, queries, demo_index):
    meta = json.loads((demo_index / "v0001" / "meta.json").read_text())
    same, total = 0, 0
    for photo, text, label in queries:
        response = facade.post(
            "/v1/similar", files={"photo": ("p.jpg", photo)}, data={"text": text, "k": "5"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == "combined" and body["index_version"] == "v0001"
        listings = body["listings"]
        assert len(listings) == 5
        scores = [item["score"] for item in listings]
        assert scores == sorted(scores, reverse=True) and max(scores) <= 1.0 + 1e-5
        same += sum(item["category"] == label for item in listings)
        total += len(listings)
    assert meta["count"] > 5
    assert same / total > 3 / 13, same / total
    text_only = facade.post("/v1/similar", data={"text": queries[0][1], "k": "3"})
    assert text_only.status_code == 200 and text_only.json()["kind"] == "text"


def test_health_readiness_and_openapi(facade, demo_index):
    assert facade.get("/healthz").json() == {"status": "ok"}
    ready = facade.get("/readyz")
    assert ready.status_code == 200
    current = (demo_index / "CURRENT").read_text().strip()
    assert ready.json() == {
        "triton": True,
        "models": True,
        "index": True,
        "index_version": current,
        "model_version": 1,
        "rollout": "serving version 1",
        "refused": {},
        "pinned": None,
        "triton_process": None,
    }
    paths = facade.get("/openapi.json").json()["paths"]
    assert {
        "/v1/predict/image",
        "/v1/predict/text",
        "/v1/predict/combined",
        "/v1/embed",
        "/v1/similar",
    } <= set(paths)


def test_a_query_the_index_has_no_embeddings_for_is_refused(
    facade_settings, triton, cpu_repository, demo_prepared, queries, tmp_path
):
    index_dir = tmp_path / "index"
    build_catalogue_index(
        demo_prepared, index_dir, triton.ports.grpc_url, cpu_repository,
        splits=("train",), kinds=(Kind.combined,), progress=False,
    )  # fmt: skip
    photo, text, _ = queries[0]
    settings = facade_settings.model_copy(update={"index_dir": index_dir})
    with running_facade(settings) as client:
        both = client.post("/v1/similar", files={"photo": ("p.jpg", photo)}, data={"text": text})
        assert both.status_code == 200, both.text
        text_only = client.post("/v1/similar", data={"text": text})
        assert_error(text_only, 422, "no text embeddings", "a photo and a text")


def test_index_reload_under_concurrent_requests_fails_none(
    facade_settings, triton, cpu_repository, demo_prepared, queries, tmp_path
):
    index_dir = tmp_path / "index"
    build_catalogue_index(
        demo_prepared,
        index_dir,
        triton.ports.grpc_url,
        cpu_repository,
        splits=("train",),
        progress=False,
    )
    settings = facade_settings.model_copy(update={"index_dir": index_dir, "index_poll_s": 0.2})
    with running_facade(settings) as client:
        stop, failures, versions = threading.Event(), [], set()

        def hammer(i: int) -> None:
            photo, text, _ = queries[i % len(queries)]
            while not stop.is_set():
                r = client.post(
                    "/v1/similar", files={"photo": ("p.jpg", photo)}, data={"text": text, "k": "3"}
                )
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.add(r.json()["index_version"])

        with ThreadPoolExecutor(4) as pool:
            for i in range(4):
                pool.submit(hammer, i)
            # a new version, picked up by the file watcher, then a forced reload by the endpoint
            build_catalogue_index(
                demo_prepared, index_dir, triton.ports.grpc_url, cpu_repository, progress=False
            )
            for _ in range(3):
                assert client.post("/v1/admin/reload-index").status_code == 200
            deadline = time.monotonic() + 30  # let requests run on the new version too
            while "v0002" not in versions and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
        assert failures == []
        assert versions == {"v0001", "v0002"}
        assert client.get("/readyz").json()["index_version"] == "v0002"


def test_triton_killed_under_load_gives_only_503s_then_recovers(
    facade_settings, cpu_repository, tmp_path
):
    ports = TritonPorts("127.0.0.1", *free_ports(3))
    triton = LocalTriton(cpu_repository, ports, tmp_path / "triton.log").start()
    settings = facade_settings.model_copy(
        update={"triton_url": ports.grpc_url, "triton_timeout_s": 5}
    )
    answers, stop = [], threading.Event()
    try:
        with running_facade(settings) as client:

            def hammer() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    r = client.post("/v1/predict/text", json={"text": "a sofa"})
                    answers.append((started, time.monotonic() - started, r))

            with ThreadPoolExecutor(3) as pool:
                for _ in range(3):
                    pool.submit(hammer)
                try:
                    time.sleep(1)
                    stubs = [int(p) for p in subprocess.check_output(
                        ["pgrep", "-P", str(triton.pid)], text=True).split()]  # fmt: skip
                    triton.process.kill()
                    triton.process.wait()
                    killed = time.monotonic()
                    time.sleep(2)
                    triton = LocalTriton(cpu_repository, ports, tmp_path / "triton2.log").start()
                    ready = time.monotonic()
                    # nothing the killed server started runs on beside the new one
                    assert stubs and not any(alive(pid) for pid in stubs)
                    deadline = ready + 10
                    while time.monotonic() < deadline and not any(
                        t > ready and r.status_code == 200 for t, _, r in answers
                    ):
                        time.sleep(0.1)
                finally:
                    stop.set()
    finally:
        triton.stop()

    assert {r.status_code for _, _, r in answers} == {200, 503}
    for _, seconds, r in answers:
        if r.status_code == 503:
            assert_error(r, 503, "unavailable")
            assert r.headers["retry-after"] == str(settings.retry_after_s)
            # Triton's address and gRPC error text go to the log, not to the caller
            assert str(ports.grpc) not in r.text and "StatusCode" not in r.text
            assert seconds < settings.triton_timeout_s + 2  # nothing waits past the deadline
    assert any(killed < t < ready and r.status_code == 503 for t, _, r in answers)
    recovered = min(t + s for t, s, r in answers if t > ready and r.status_code == 200)
    print(f"first 200 {recovered - ready:.2f} s after the restarted Triton was ready")
    assert recovered - ready < 5, f"first 200 {recovered - ready:.1f} s after Triton was back"


def test_serving_imports_without_torch():
    code = (
        "import sys\n"
        "from fbmr.serving import cli\n"
        "from fbmr.serving.http import main\n"
        "from fbmr.serving.index import catalogue, store\n"
        "from fbmr.serving.triton import cli as triton_cli\n"
        "assert 'torch' not in sys.modules, 'fbmr.serving imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seed_compatible_routes_answer_as_the_v1_routes(facade, queries):
    photo, text, _ = queries[0]
    pairs = [
        (
            facade.post("/image", files={"image": ("p.jpg", photo)}),
            facade.post("/v1/predict/image", files={"photo": ("p.jpg", photo)}),
        ),
        (
            facade.post("/text", data={"text": text}),
            facade.post("/v1/predict/text", json={"text": text}),
        ),
        (
            facade.post("/combined", files={"image": ("p.jpg", photo)}, data={"text": text}),
            facade.post(
                "/v1/predict/combined", files={"photo": ("p.jpg", photo)}, data={"text": text}
            ),
        ),
    ]
    for seed, v1 in pairs:
        assert seed.status_code == v1.status_code == 200, (seed.text, v1.text)
        assert seed.json() == v1.json()
        assert seed.json()["pred"] == seed.json()["classes"][0]
    assert_error(facade.post("/combined", data={"text": text}), 422, "image")
