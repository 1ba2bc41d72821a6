"""Old index versions are removed after a build, on every engine, and a removal stopped part-way
is finished by the next one."""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.serving.cli import build
from fbmr.serving.index.retention import KEEP_VERSIONS, prune_versions
from fbmr.serving.index.store import CURRENT, open_version, save_version


def _versions(index_dir, milvus_uri, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    listings = [
        {"id": f"l{i}", "name": f"item {i}", "category": "c", "price": None, "location": None}
        for i in range(12)
    ]
    names = []
    for _ in range(count):
        vectors = {Kind.combined: rng.normal(size=(12, 8)).astype(np.float32)}
        names.append(save_version(index_dir, vectors, listings, {}, milvus_uri=milvus_uri).name)
    return names


def _collections(index_dir, milvus_uri) -> set[str]:
    from fbmr.serving.index.milvus_index import connect

    with contextlib.closing(connect(index_dir, milvus_uri)) as client:
        return set(client.list_collections())


def _named(index_dir, version: str) -> set[str]:
    meta = open_version(index_dir / version).meta
    return set(meta.get("collections", {}).values())


def test_all_but_the_newest_are_removed_with_their_collections(tmp_path, milvus_uri):
    index_dir = tmp_path / "index"
    names = _versions(index_dir, milvus_uri, 3)  # (on a Milvus server, seconds a version)
    old = _named(index_dir, names[0]) if milvus_uri else set()
    assert prune_versions(index_dir, 2, milvus_uri) == names[:1]
    assert sorted(p.name for p in index_dir.glob("v[0-9]*")) == names[1:]
    assert (index_dir / CURRENT).read_text().strip() == names[-1]
    assert open_version(index_dir / names[-1]).search(Kind.combined, np.ones(8), 3)
    if milvus_uri:
        left = _collections(index_dir, milvus_uri)
        assert old and not old & left
        assert set().union(*(_named(index_dir, v) for v in names[1:])) <= left
    assert prune_versions(index_dir, 2, milvus_uri) == []  # nothing more to do


def test_the_version_in_use_is_kept_however_old(tmp_path):
    index_dir = tmp_path / "index"
    names = _versions(index_dir, None, 4)
    (index_dir / CURRENT).write_text(names[0] + "\n")  # rolled back by hand
    assert prune_versions(index_dir, 1) == names[1:3]
    assert sorted(p.name for p in index_dir.glob("v[0-9]*")) == [names[0], names[3]]


def test_a_removal_stopped_part_way_is_finished_by_the_next(tmp_path, milvus_uri, monkeypatch):
    """Stopped after the rename (the collections could not be dropped: Milvus away, or the
    process killed): the version is out of reach at once, and the next prune removes it."""
    index_dir = tmp_path / "index"
    names = _versions(index_dir, milvus_uri, 2)
    old = _named(index_dir, names[0]) if milvus_uri else set()

    def stopped(*args, **kwargs):
        raise ConnectionError("stopped here")

    with monkeypatch.context() as patch:
        patch.setattr("fbmr.serving.index.retention._drop_collections", stopped)
        with pytest.raises(ConnectionError):
            prune_versions(index_dir, 1, milvus_uri)
    assert (index_dir / f".{names[0]}.removing").is_dir()
    assert not (index_dir / names[0]).exists()
    assert _versions(index_dir, milvus_uri, 1) == ["v0003"]  # numbering goes on
    assert prune_versions(index_dir, 2, milvus_uri) == [names[0]]
    assert not list(index_dir.glob(".*removing"))
    if milvus_uri:
        assert not old & _collections(index_dir, milvus_uri)


@pytest.mark.integration  # milvus-lite
def test_a_version_in_another_milvus_is_left_there_with_its_folder(tmp_path, caplog):
    index_dir = tmp_path / "index"
    names = _versions(index_dir, "milvus.db", 2)
    # the newest version moved to another Milvus: the token is not for the old one's
    assert prune_versions(index_dir, 1, "other.db") == []
    assert (index_dir / f".{names[0]}.removing").is_dir()
    assert _named_aside(index_dir, names[0]) <= _collections(index_dir, "milvus.db")
    assert "in another Milvus" in caplog.text
    assert prune_versions(index_dir, 1, "milvus.db") == [names[0]]  # its own build finishes it


def _named_aside(index_dir, version: str) -> set[str]:
    meta = json.loads((index_dir / f".{version}.removing" / "meta.json").read_text())
    return set(meta["collections"].values())


def test_keep_must_keep_one_and_the_cli_default_is_the_module_s():
    with pytest.raises(ValueError, match="at least 1"):
        prune_versions(Path("."), 0)
    assert inspect.signature(build).parameters["keep_versions"].default.default == KEEP_VERSIONS


def test_a_version_whose_meta_cannot_be_read_is_kept(tmp_path, caplog):
    """It may name Milvus collections (another format, a damaged file): never deleted blind."""
    index_dir = tmp_path / "index"
    names = _versions(index_dir, None, 3)
    (index_dir / names[0] / "meta.json").write_text('{"format": 99, "collections"')
    (index_dir / "v0000").mkdir()  # a version never finished: nothing outside its folder
    assert prune_versions(index_dir, 1) == ["v0000", names[1]]
    assert (index_dir / f".{names[0]}.removing").is_dir() and "cannot be read" in caplog.text
