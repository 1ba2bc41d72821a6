"""Fixtures of the client tests: listings to query with, facades with an API key and with Triton
away, and one direct-mode scoring of the demo catalogue that other runs are compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from fbmr.client.retry import RetryPolicy

API_KEY = "test-key"
# Retries short enough for tests, long enough to see them happen.
QUICK_RETRY = RetryPolicy(attempts=3, timeout_s=20, wait_initial_s=0.05, wait_max_s=0.2)


@pytest.fixture(scope="session")
def listing(demo_prepared) -> tuple[bytes, str, str]:
    """A test-split listing of the demo data: its photo's bytes, its text and its label."""
    from fbmr.training.data.prepared import PreparedDataset

    data = PreparedDataset(demo_prepared)
    products = data.products("test")
    images = data.images("test").drop_duplicates("product_id").set_index("product_id")
    product = next(p for _, p in products.iterrows() if p["product_id"] in images.index)
    photo = data.image_path(images.loc[product["product_id"], "image_id"]).read_bytes()
    return photo, data.text(product), product["label"]


@pytest.fixture(scope="session")
def facade_url(facade) -> str:
    return str(facade.base_url).rstrip("/")


@pytest.fixture(scope="session")
def keyed_facade_url(facade_settings):
    """A facade that requires API_KEY."""
    from tests.helpers import running_facade

    settings = facade_settings.model_copy(update={"api_key": SecretStr(API_KEY)})
    with running_facade(settings) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture(scope="session")
def tritonless_facade_url(facade_settings):
    """A facade whose Triton is not there: every prediction is a 503 with Retry-After: 1."""
    from tests.helpers import free_ports, running_facade

    (port,) = free_ports(1)
    settings = facade_settings.model_copy(
        update={"triton_url": f"127.0.0.1:{port}", "retry_after_s": 1, "triton_timeout_s": 2.0}
    )
    with running_facade(settings) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture(scope="session")
def direct_scores(demo_seed, triton, cpu_repository, tmp_path_factory) -> pd.DataFrame:
    """The demo catalogue (seed layout) scored once straight against the session's Triton."""
    from fbmr.client.batch.run import TritonTarget, score

    out = tmp_path_factory.mktemp("scores") / "direct.parquet"
    target = TritonTarget((triton.ports.grpc_url,), cpu_repository, workers=2)
    score(demo_seed, out, target, progress=False)
    return pd.read_parquet(out)


def comparable(frame: pd.DataFrame) -> set[tuple]:
    """Rows as a set of values, probabilities left out (see `assert_same_rows`)."""
    rows = set()
    for row in frame.itertuples(index=False):
        classes = None if row.classes is None else tuple(row.classes)
        error = None if pd.isna(row.error) else row.error
        rows.add((row.id, row.kind, row.pred, classes, error))
    return rows


def assert_same_rows(frame: pd.DataFrame, other: pd.DataFrame) -> None:
    """The same rows (as a set), probabilities equal up to float noise (Triton batches requests
    together differently from run to run)."""
    assert comparable(frame) == comparable(other)
    mine = dict(zip(frame["id"], frame["probabilities"], strict=True))
    for i, probabilities in zip(other["id"], other["probabilities"], strict=True):
        if probabilities is None:
            assert mine[i] is None
        else:
            assert np.allclose(mine[i], probabilities, atol=1e-5), i


def first_photo_problems(seed: Path) -> dict[str, str]:
    """Expected error reasons of a seed layout's rows, found independently of the client: the
    first photo of each listing missing, or not decodable by Pillow."""
    from PIL import Image

    products = pd.read_csv(seed / "Products.csv", lineterminator="\n", dtype=str, index_col=0)
    images = pd.read_csv(seed / "Images.csv", lineterminator="\n", dtype=str, index_col=0)
    images.columns = [c.strip() for c in images.columns]
    first = images.assign(id=images["id"].str.strip()).drop_duplicates("product_id")
    problems = {}
    for product_id, image_id in zip(first["product_id"], first["id"], strict=True):
        if product_id not in set(products["id"]):
            continue
        path = seed / "images" / f"{image_id}.jpg"
        if not path.is_file():
            problems[product_id] = "photo_missing"
            continue
        try:
            with Image.open(path) as image:
                image.load()
        except OSError:
            problems[product_id] = "photo_unreadable"
    return problems
