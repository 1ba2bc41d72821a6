"""`fbmr index compact` on every engine: the log cut down to each listing's last record and
folded into a new version, with nothing lost or brought back, by workers that loaded before it,
by a fresh load and by the next build; old generations and photos removed; and a compaction
killed after any of its steps leaves all of that true."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.serving.index import store
from fbmr.serving.index.compaction import compact
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import read_meta
from fbmr.serving.index.log_generations import Position, generations, live_generation
from fbmr.serving.index.store import CURRENT, open_version, save_version
from fbmr.serving.index.updates import Update, UpdateLog, fold
from tests.helpers import REPO_ROOT

DIM = 16
KINDS = (Kind.text, Kind.combined)
MODEL_VERSION = 3
CATALOGUE = 40


def _listing(i: str, category: str = "chairs") -> dict:
    return {"id": i, "name": f"item {i}", "category": category, "price": 10.0, "location": None}


def _put(listing_id: str, seed: int, category: str = "lamps", photo: str = "ab12") -> Update:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return Update(
        "put",
        listing_id,
        model_version=MODEL_VERSION,
        listing=_listing(listing_id, category),
        source={"name": f"item {listing_id}", "description": "", "photo": photo},
        vectors={k: vector for k in KINDS},
    )


def _catalogue(tmp_path, milvus_uri, kind: IndexType = IndexType.exact):
    """An index of CATALOGUE listings, then a log that puts 12 listings 5 times each (the last
    put's category decides), deletes 4 of the catalogue's and 3 of those put. Returns the index
    directory and the ids and categories it should hold."""
    rng = np.random.default_rng(0)
    vectors = {k: rng.normal(size=(CATALOGUE, DIM)).astype(np.float32) for k in KINDS}
    index_dir = tmp_path / "index"
    listings = [_listing(str(i)) for i in range(CATALOGUE)]
    save_version(index_dir, vectors, listings, {"model_version": MODEL_VERSION}, kind, milvus_uri)
    log = UpdateLog(index_dir)
    for round_ in range(5):
        for i in range(12):
            log.append(_put(f"new-{i}", seed=100 * round_ + i, category=f"round-{round_}"))
    for listing_id in ["0", "1", "2", "3", "new-0", "new-1", "new-2"]:
        log.append(Update("delete", listing_id))
    expected = {str(i): "chairs" for i in range(4, CATALOGUE)}
    expected |= {f"new-{i}": "round-4" for i in range(3, 12)}
    return index_dir, expected


def _held(index, ids) -> dict[str, str]:
    """Which of `ids` the index holds, with their categories."""
    return {i: found["category"] for i in ids if (found := index.get(i)) is not None}


# the prepared catalogue a build folds the log into (rows as `read_catalogue` gives them)
ROWS = [{"product_id": str(i), "product_name": f"item {i}", "label": "c"} for i in range(CATALOGUE)]
ALL_IDS = [str(i) for i in range(CATALOGUE)] + [f"new-{i}" for i in range(12)] + ["late"]


def test_a_compaction_keeps_what_the_log_says_in_a_fraction_of_it(tmp_path, milvus_uri):
    index_dir, expected = _catalogue(tmp_path, milvus_uri)
    built_rows, _ = fold(ROWS, index_dir)  # what the next build reads from the log
    worker = open_version(index_dir / "v0001")  # a facade worker, loaded before
    writer = UpdateLog(index_dir)  # a writer of before, too
    assert _held(worker, ALL_IDS) == expected

    done = compact(index_dir, milvus_uri=milvus_uri)

    assert (done.records_before, done.records_after) == (67, 16)  # 12 ids put, 4 deleted
    assert done.bytes_after < done.bytes_before / 4
    assert done.version == "v0002" == (index_dir / CURRENT).read_text().strip()
    fresh = open_version(index_dir / "v0002")
    assert len(fresh) == len(expected) and _held(fresh, ALL_IDS) == expected
    assert fresh.updates.has_new() is False  # the new version replays nothing
    assert fold(ROWS, index_dir)[0] == built_rows  # the next build reads the same history

    # after it: the writer of before appends to the new generation; every reader sees it
    writer.append(_put("late", seed=7))
    writer.append(Update("delete", "4"))
    assert live_generation(index_dir) == 1
    expected = {k: v for k, v in expected.items() if k != "4"} | {"late": "lamps"}
    for index in (worker, fresh, open_version(index_dir / "v0001")):
        index.catch_up()
        assert _held(index, ALL_IDS) == expected
    hits = fresh.search(Kind.text, _put("late", seed=7).vectors[Kind.text], 1)
    assert hits[0].listing["id"] == "late"


def test_old_generations_and_photos_go_once_no_kept_version_needs_them(tmp_path):
    index_dir, expected = _catalogue(tmp_path, None)
    photos = index_dir / "photos"
    photos.mkdir()
    for name in ("sold", "kept"):
        (photos / name).write_bytes(b"jpeg")
        os.utime(photos / name, (0, 0))  # older than the grace for a put on its way
    log = UpdateLog(index_dir)
    log.append(_put("with-photo", seed=1, photo="sold"))
    log.append(_put("other", seed=2, photo="kept"))
    log.append(Update("delete", "with-photo"))

    compact(index_dir, keep=2)
    assert sorted(p.name for p in photos.iterdir()) == ["kept"]  # the sold listing's is gone
    assert generations(index_dir) == [0, 1]  # v0001 (kept) still reads generation 0
    for round_ in range(3):
        log.append(_put(f"more-{round_}", seed=round_))
        compact(index_dir, keep=2)
    assert generations(index_dir) == [3, 4]  # the two versions kept read from 3 and 4
    assert sorted(p.name for p in index_dir.glob("v*")) == ["v0004", "v0005"]
    index = open_version(index_dir / "v0005")
    assert _held(index, ALL_IDS) == expected
    assert all(f"more-{i}" in index for i in range(3)) and "other" in index


def test_updates_acknowledged_during_compactions_are_all_kept(tmp_path):
    index_dir, expected = _catalogue(tmp_path, None)
    acknowledged: list[str] = []

    def put_stream() -> None:
        log = UpdateLog(index_dir)
        for i in range(150):
            log.append(_put(f"stream-{i}", seed=1000 + i))
            acknowledged.append(f"stream-{i}")

    writer = threading.Thread(target=put_stream)
    writer.start()
    while writer.is_alive():
        compact(index_dir, keep=2)
    writer.join()
    compact(index_dir, keep=2)
    index = open_version(index_dir / (index_dir / CURRENT).read_text().strip())
    assert len(acknowledged) == 150 and all(i in index for i in acknowledged)
    assert len(index) == len(expected) + 150


# Where a compaction is killed: after each step (module:function), the new generation's file
# written but the live one not sealed; sealed, with no version; a version saved, not tidied up;
# and with the old versions removed, but not the generations.
KILL_AFTER = [
    "compaction:write_durably",
    "compaction:rotate",
    "compaction:fold_into_version",
    "retention:prune_versions",
]
KILLED = """
import os, signal, sys
from pathlib import Path
from fbmr.serving.index import compaction, retention

module, name = sys.argv[2].split(":")
where = {"compaction": compaction, "retention": retention}[module]
step = getattr(where, name)

def killed(*args, **kwargs):
    step(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(where, name, killed)
compaction.compact(Path(sys.argv[1]), keep=2)
"""


@pytest.mark.parametrize("step", KILL_AFTER)
def test_a_compaction_killed_after_any_step_loses_nothing(tmp_path, step):
    index_dir, expected = _catalogue(tmp_path, None)
    compact(index_dir, keep=2)  # a compacted generation and version to start from
    UpdateLog(index_dir).append(_put("late", seed=7))
    expected |= {"late": "lamps"}
    rows_before, _ = fold(ROWS, index_dir)

    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(index_dir), step], cwd=REPO_ROOT, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL

    current = open_version(index_dir / (index_dir / CURRENT).read_text().strip())
    assert _held(current, ALL_IDS) == expected
    assert fold(ROWS, index_dir)[0] == rows_before
    UpdateLog(index_dir).append(Update("delete", "late"))  # writers go on
    current.catch_up()
    assert "late" not in current
    compact(index_dir, keep=2)  # and the next compaction finishes the job
    expected.pop("late")
    latest = open_version(index_dir / (index_dir / CURRENT).read_text().strip())
    assert _held(latest, ALL_IDS) == expected
    kept = [Position.of(read_meta(path)) for path in index_dir.glob("v*")]
    assert len(kept) == 2  # nothing older than a kept version reads is left
    assert generations(index_dir) == list(
        range(min(kept).generation, live_generation(index_dir) + 1)
    )
    assert not list(index_dir.glob(".*partial")) and not list(index_dir.glob(".*removing"))


def test_a_writer_of_a_removed_generation_appends_to_the_live_one(tmp_path):
    """A writer that last wrote before several compactions (a worker still on an old version)
    never makes its removed generation again: that would start a log no reader follows."""
    index_dir, expected = _catalogue(tmp_path, None)
    stale = UpdateLog(index_dir)
    for _ in range(3):
        compact(index_dir, keep=2)
    assert 0 not in generations(index_dir)
    stale.append(_put("late", seed=7))
    assert 0 not in generations(index_dir)
    current = open_version(index_dir / (index_dir / CURRENT).read_text().strip())
    assert _held(current, ALL_IDS) == expected | {"late": "lamps"}


def test_a_version_whose_generation_was_removed_replays_the_live_one(tmp_path):
    """A version restored by hand after its log generation was removed still loads with every
    update: it replays the live generation from its start, whose head says what came before."""
    index_dir, expected = _catalogue(tmp_path, None)
    shutil.copytree(index_dir / "v0001", tmp_path / "restored")
    for _ in range(2):
        compact(index_dir, keep=2)
    assert 0 not in generations(index_dir)
    shutil.copytree(tmp_path / "restored", index_dir / "v0099")
    restored = open_version(index_dir / "v0099")
    assert _held(restored, ALL_IDS) == expected


@pytest.mark.parametrize("kind", [IndexType.exact, IndexType.hnsw, IndexType.ivf])
def test_an_index_with_nothing_masked_is_saved_as_it_is(tmp_path, monkeypatch, kind):
    """Only new listings put: the compaction writes the loaded indexes as they are (an HNSW
    graph of a million listings takes minutes to build again), and they answer as the worker's."""
    rng = np.random.default_rng(0)
    index_dir = tmp_path / "index"
    vectors = {k: rng.normal(size=(300, DIM)).astype(np.float32) for k in KINDS}
    listings = [_listing(str(i)) for i in range(300)]
    save_version(index_dir, vectors, listings, {"model_version": MODEL_VERSION}, kind)
    for i in range(20):
        UpdateLog(index_dir).append(_put(f"new-{i}", seed=i))
    worker = open_version(index_dir / "v0001")

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(store, "build_faiss", no_rebuild)
    assert compact(index_dir).version == "v0002"
    saved = open_version(index_dir / "v0002")
    assert saved.meta["type"] == kind.value and len(saved) == 320
    for seed in range(5):
        query = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
        found = [h.listing["id"] for h in saved.search(Kind.text, query, 10)]
        assert found == [h.listing["id"] for h in worker.search(Kind.text, query, 10)]


def test_removing_old_versions_keeps_the_collections_a_compacted_version_shares(
    tmp_path, milvus_uri
):
    """A compacted Milvus version searches its predecessor's collections: removing the
    predecessor must leave them (on FAISS each version has files of its own)."""
    index_dir, expected = _catalogue(tmp_path, milvus_uri)
    for _ in range(3):
        compact(index_dir, keep=2, milvus_uri=milvus_uri)
    assert sorted(p.name for p in index_dir.glob("v*")) == ["v0003", "v0004"]
    current = open_version(index_dir / "v0004")
    assert _held(current, ALL_IDS) == expected
    hits = current.search(Kind.text, _put("new-5", seed=405).vectors[Kind.text], 1)
    assert hits[0].listing["id"] == "new-5"
