"""Constants and small helpers shared by the tests and by tests/conftest.py's fixtures (tests
import them from here, never from a conftest)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from fbmr.serving.triton.ports import free_ports as free_ports  # re-exported for the tests
from fbmr.training.config import PRESETS, Preset

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "marketplace"

# The whole chain on the demo data in well under a minute on 2 CPU cores, without progress bars.
TINY_TRAINING = {"progress": False, **PRESETS[Preset.tiny]}

# The session fixtures that take minutes to build, with the time each may take on top of a test's
# timeout (pyproject.toml): given to the first test in the run that uses it, which builds it.
SESSION_BUILD_S = {
    "tiny_run": 300,  # the demo data prepared, all four stages trained
    "cpu_repository": 300,  # the ONNX export, parity-checked
    "int8_repository": 300,  # the INT8 export and its gate
    "triton": 120,  # tritonserver loading the repository
    "demo_index": 120,  # the catalogue embedded through Triton
}


# The tiny run's image encoder is trained from random weights on 64 px demo photos, which
# quantise worse than a pretrained trunk: the INT8 gate is opened here, and tested apart.
INT8_CALIBRATION_PHOTOS = 24

# the key the session's tritonserver restricts its repository API to (tests/conftest.py)
TRITON_ADMIN_KEY = "test-triton-admin-key"
# The facade's limits in the tests: small enough to test going over them cheaply.
TEST_LIMITS = {
    "max_body_bytes": 2_000_000,
    "max_pixels": 4_000_000,
    "max_text_chars": 2_000,
    "max_k": 50,
}


def run_script(script: str, *args: str, env: dict[str, str], timeout: float) -> str:
    """A bash script of the repository run to its end with `env` added to this environment; its
    output (the tail of stdout and stderr is the failure message when it fails)."""
    done = subprocess.run(
        ["bash", script, *args],
        cwd=Path(__file__).resolve().parents[1],  # the repository
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    """An image encoded in memory."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def csv_field(value: object) -> str:
    """A CSV field as the seed export writes it: quoted only for commas and quotes, so a bare
    carriage return can sit in an unquoted field."""
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_seed_layout(root, products: list[dict], images: list[dict], photos: dict[str, bytes]):
    """A seed-layout folder with the real files' line endings: Products.csv rows end in `\\n`,
    Images.csv rows in `\\r\\n`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    columns = ["id", "product_name", "category", "product_description", "price", "location"]
    lines = ["," + ",".join(columns)]
    lines += [
        ",".join([str(i)] + [csv_field(p.get(c, "")) for c in columns])
        for i, p in enumerate(products)
    ]
    (root / "Products.csv").write_bytes(("\n".join(lines) + "\n").encode())
    columns = ["id", "product_id", "bucket_link", "image_ref", "create_time"]
    lines = ["," + ",".join(columns)]
    lines += [
        ",".join([str(i)] + [csv_field(row.get(c, "")) for c in columns])
        for i, row in enumerate(images)
    ]
    (root / "Images.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    for image_id, data in photos.items():
        (root / "images" / f"{image_id}.jpg").write_bytes(data)
    return root


@contextmanager
def running_facade(settings) -> Iterator:
    """Yields an httpx client on a facade (FacadeSettings) served by uvicorn in a thread on a free
    127.0.0.1 port; stops it on exit."""
    import httpx
    import uvicorn

    from fbmr.serving.http.main import create_app

    (port,) = free_ports(1)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the facade did not start")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


def assert_error(response, status: int, *words: str, code: str | None = None) -> None:
    """The facade's error answer: `status`, a JSON body of an `error` message holding `words`,
    no stack trace, and an ErrorCode (`code`, when given)."""
    from fbmr.core.contract import ErrorCode

    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and "Traceback" not in body["error"], body
    assert body["code"] in set(ErrorCode), body
    if code is not None:
        assert body["code"] == code, body
    for word in words:
        assert word in body["error"], body["error"]


def split_listings(prepared, split: str) -> list[tuple[bytes, str, str]]:
    """The listings of a prepared dataset's `split` that have a photo: (photo bytes, listing
    text as the models read it, category)."""
    from fbmr.training.data.prepared import PreparedDataset

    data = PreparedDataset(prepared)
    photos = data.images(split).drop_duplicates("product_id").set_index("product_id")
    out = []
    for _, product in data.products(split).iterrows():
        if product["product_id"] in photos.index:
            path = data.image_path(photos.loc[product["product_id"], "image_id"])
            out.append((path.read_bytes(), data.text(product), product["label"]))
    return out


@contextmanager
def serving_stack(repository, facade_settings, log_dir) -> Iterator:
    """A tritonserver of its own on `repository` and a facade in front of it (free ports), for a
    test that changes the repository while serving; yields an httpx client once /readyz is 200.
    The facade looks for new versions every 0.5 s and lets requests wait 45 s for a switch."""
    from fbmr.serving.triton.ports import TritonPorts
    from fbmr.serving.triton.server import LocalTriton

    ports = TritonPorts("127.0.0.1", *free_ports(3))
    settings = facade_settings.model_copy(
        update={
            "triton_url": ports.grpc_url,
            "model_repository": repository,
            "model_poll_s": 0.5,
            # a switch takes about 5 s on a loaded machine; room for a slower one (the client's
            # timeout is 60 s)
            "swap_wait_s": 45,
        }
    )
    with LocalTriton(repository, ports, log_dir / "triton.log"), running_facade(settings) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.2)
        yield client


def wait_for(
    condition: Callable[[], bool],
    within_s: float,
    what: str,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Wait until `condition()` holds, polling; fail saying `what` (and `detail()`) did not
    happen within `within_s` seconds. What tests use instead of a fixed sleep."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s:.0f} s: {what} {detail()}"
        time.sleep(0.05)


def wait_until_ready(url: str, process, log, timeout_s: float = 90, path: str = "/readyz") -> None:
    """Wait until the facade `process` (its output in file `log`) answers `path` with 200."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"facade not ready; log:\n{log.read_text()}")


def untrained_run_models(prepared, training: dict):
    """What `fbmr export` reads from a run trained with `training` (a preset's settings) on the
    prepared dataset `prepared`, without training anything: the models' names and tensors as
    `fbmr.export.onnx_models.load_run` gives them for that run (identity modules), the dataset's
    classes, the image settings, and a tokeniser over the train split's words by frequency (what
    the word2vec stage would keep with min_count 1), with the same n-gram and WordPiece settings.

    For the tests that read an exported version's files (configs, ensembles, artifacts) and never
    run its models: `stage_version` writes them from this in milliseconds, where training the tiny
    run and exporting it takes minutes."""
    from collections import Counter

    import numpy as np
    from torch import nn

    from fbmr.core.contract import (
        COMBINED_EMBEDDING,
        FUSION_HEAD,
        IMAGE_EMBEDDING,
        IMAGE_HEAD,
        LOGITS,
        PROBABILITIES,
        TEXT_EMBEDDING,
        TEXT_ENCODER,
        TEXT_HEAD,
        TOKEN_IDS,
        Datatype,
    )
    from fbmr.core.image import ImageSpec
    from fbmr.core.text import Tokenizer, tokenize
    from fbmr.export.onnx_models import OnnxModel, RunModels, TensorSpec, image_encoder
    from fbmr.training.config import TrainConfig
    from fbmr.training.data.prepared import PreparedDataset
    from fbmr.training.sentence import wordpiece
    from fbmr.training.stages.word2vec import ngram_hashing
    from fbmr.training.trunks import TRUNKS, Backbone

    config = TrainConfig(data=str(prepared), **training)
    data = PreparedDataset(prepared)
    counts = Counter(
        word for _, row in data.products("train").iterrows() for word in tokenize(data.text(row))
    )
    pieces = wordpiece(config.text_sentence, config.text_sentence_length)
    tokenizer = Tokenizer(
        [w for w, _ in counts.most_common()], config.max_length, ngram_hashing(config), pieces
    )
    trunk = TRUNKS[Backbone(config.backbone)]
    spec = ImageSpec.for_image_size(config.image_size, trunk.mean, trunk.std, config.image_crop)
    size = spec.image_size
    classes = list(data.label_map.classes)
    image_dim = config.embedding_dim
    text_dim = config.embedding_dim * (config.text_members + (config.text_sentence != "none"))
    heads = [
        TensorSpec(LOGITS, Datatype.FP32, (len(classes),)),
        TensorSpec(PROBABILITIES, Datatype.FP32, (len(classes),)),
    ]
    image_embedding = TensorSpec(IMAGE_EMBEDDING, Datatype.FP32, (image_dim,))
    text_embedding = TensorSpec(TEXT_EMBEDDING, Datatype.FP32, (text_dim,))
    token_ids = TensorSpec(TOKEN_IDS, Datatype.INT64, (tokenizer.max_length,))
    combined = TensorSpec(COMBINED_EMBEDDING, Datatype.FP32, (config.embedding_dim,))
    models = [
        image_encoder(nn.Identity(), spec, image_dim, np.zeros((0, 3, size, size), np.uint8)),
        OnnxModel(IMAGE_HEAD, nn.Identity(), [image_embedding], heads, []),
        OnnxModel(TEXT_ENCODER, nn.Identity(), [token_ids], [text_embedding], []),
        OnnxModel(TEXT_HEAD, nn.Identity(), [text_embedding], heads, []),
        OnnxModel(
            FUSION_HEAD, nn.Identity(), [image_embedding, text_embedding], [*heads, combined], []
        ),
    ]
    trunk_record = {"backbone": config.backbone, "weights": config.image_weights}
    return RunModels(models, classes, spec, tokenizer, TEXT_ENCODER, trunk_record, data)


# The whole test run's budget: a run past it fails, whatever its tests did, so a run gone wrong
# (a server hung, a test grown tenfold) and a suite grown slower cannot pass silently. The bar
# for CI is 15 minutes in all, about 13 of them pytest on two workers; the budget sits above it
# (18) because the same suite's time varies by a sixth from hour to hour on a shared 2-core
# machine (1,113 to 1,306 s of pytest for the same commit, on one process).
RUN_BUDGET_S = 18 * 60
RUN_BUDGET_ENV = "FBMR_TEST_BUDGET_S"  # another budget in seconds; 0 turns the check off


def run_budget_s(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The run's budget in seconds: RUN_BUDGET_S, or `$FBMR_TEST_BUDGET_S` (0: no budget)."""
    value = environ.get(RUN_BUDGET_ENV, "").strip()
    if not value:
        return float(RUN_BUDGET_S)
    budget = float(value)
    if budget < 0:
        raise ValueError(f"{RUN_BUDGET_ENV} must be 0 (off) or a number of seconds, not {value!r}")
    return budget


def over_budget(elapsed_s: float, budget_s: float) -> str | None:
    """Why a run that took `elapsed_s` fails its budget, or None when it is within it (or the
    budget is 0, off)."""
    if budget_s <= 0 or elapsed_s <= budget_s:
        return None
    return (
        f"the test run took {elapsed_s:.0f} s ({elapsed_s / 60:.1f} min), over its budget of "
        f"{budget_s:.0f} s ({budget_s / 60:.1f} min): "
        "it fails although its tests passed; the slowest tests are listed above "
        f"({RUN_BUDGET_ENV}=0 turns the check off for a local run)"
    )
