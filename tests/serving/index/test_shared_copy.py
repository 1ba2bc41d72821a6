"""A Milvus index is one copy that every facade worker shares: each logged update is applied to
it once, in log order, so a worker that polls late never replays an older put over a delete
another worker acknowledged; an applier killed part way is finished by the next; and workers
writing at once end on the log's own last word for each listing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.serving.index import live_index
from fbmr.serving.index.store import open_version, save_version
from fbmr.serving.index.updates import Update, UpdateLog, changes

DIM = 8
KINDS = (Kind.text,)


@pytest.fixture(
    params=[
        pytest.param("milvus-lite", marks=pytest.mark.integration),
        pytest.param("milvus-server", marks=pytest.mark.integration),
    ]
)
def shared_dir(request, tmp_path):
    """An index directory whose version lives in Milvus (a local file, or the test server)."""
    uri = "milvus.db"
    if request.param == "milvus-server":
        uri = request.getfixturevalue("milvus_server").uri
    listings = [
        {"id": str(i), "name": str(i), "category": "c", "price": None, "location": None}
        for i in range(20)
    ]
    vectors = {Kind.text: np.random.default_rng(0).normal(size=(20, DIM)).astype(np.float32)}
    save_version(tmp_path / "index", vectors, listings, {"model_version": 1}, milvus_uri=uri)
    return tmp_path / "index"


def _put(listing_id: str, seed: int) -> Update:
    listing = {"id": listing_id, "name": listing_id, "category": "c", "price": None}
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    source = {"name": listing_id, "description": "", "photo": None}
    return Update("put", listing_id, 1, listing, source, {Kind.text: vector})


def _counting(index) -> list[str]:
    """The writes `index` sends to Milvus, recorded as they go."""
    sent: list[str] = []
    upsert, delete = index.client.upsert, index.client.delete
    index.client.upsert = lambda *a, **k: (sent.append("upsert"), upsert(*a, **k))[1]
    index.client.delete = lambda *a, **k: (sent.append("delete"), delete(*a, **k))[1]
    return sent


def test_a_late_worker_never_replays_an_older_put_over_an_acknowledged_delete(shared_dir):
    first, late = open_version(shared_dir / "v0001"), open_version(shared_dir / "v0001")
    by_first, by_late = _counting(first), _counting(late)
    log = first.updates
    log.append(_put("x", 1))
    first.catch_up()  # acknowledged: applied
    log.append(Update("delete", "x"))
    first.catch_up()  # acknowledged: applied
    assert late.catch_up() == 0 and by_late == []  # nothing left to apply: no put again
    assert "x" not in late and by_first == ["upsert", "delete"]


def test_an_applier_killed_before_it_recorded_its_place_is_finished_by_the_next(
    shared_dir, monkeypatch
):
    first, second = open_version(shared_dir / "v0001"), open_version(shared_dir / "v0001")
    first.updates.append(_put("x", 1))
    first.updates.append(Update("delete", "3"))

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    with monkeypatch.context() as patch:  # applied, but the place not recorded
        patch.setattr(live_index, "write_durably", killed)
        with pytest.raises(SystemExit):
            first.catch_up()
    by_second = _counting(second)
    assert second.catch_up() == 2 and by_second == ["upsert", "delete"]  # again, in order
    assert "x" in second and "3" not in second
    assert second.catch_up() == 0 and first.catch_up() == 0


def test_workers_writing_at_once_end_on_the_logs_last_word(shared_dir):
    """Four workers put and delete the same ten listings at once, each applying after its own
    append as the facade does; then every worker, and a fresh load, hold what the log says."""
    workers = [open_version(shared_dir / "v0001") for _ in range(4)]
    failures: list[BaseException] = []

    def write(worker, seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for step in range(15):
                listing_id = f"shared-{rng.integers(10)}"
                if rng.random() < 0.3:
                    worker.updates.append(Update("delete", listing_id))
                else:
                    worker.updates.append(_put(listing_id, seed * 100 + step))
                worker.catch_up()
        except BaseException as err:  # reported below
            failures.append(err)

    threads = [threading.Thread(target=write, args=(w, i)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    last_word, _ = changes(shared_dir)
    expected = {i for i, row in last_word.items() if row is not None}
    for index in [*workers, open_version(shared_dir / "v0001")]:
        index.catch_up()
        held = {f"shared-{i}" for i in range(10) if f"shared-{i}" in index}
        assert held == expected
    assert UpdateLog(shared_dir).end() == workers[0].updates.position
