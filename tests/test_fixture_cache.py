"""The cache of built fixtures between test runs (tests/fixture_cache.py): a key that moves with
anything that builds them, one build per key, copies that cannot change the entry, and no entry
from a build that failed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixture_cache import BUILDING_CODE, CACHE_ENV, FixtureCache, entry_key


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A stand-in repository: the folders the key reads, a lock file, and prepared data."""
    root = tmp_path / "repo"
    for name in BUILDING_CODE:
        (root / name / "fbmr").mkdir(parents=True)
        (root / name / "fbmr" / "a.py").write_text(f"# {name}\n")
    (root / "uv.lock").write_text("lock 1\n")
    data = root / "prepared"
    data.mkdir()
    (data / "products.parquet").write_bytes(b"rows")
    (data / "manifest.json").write_text('{"source": "/tmp/1", "seconds": 0.5}')
    return root


def test_the_key_moves_with_the_code_the_lock_the_settings_and_the_data(checkout):
    data = checkout / "prepared"
    key = entry_key(checkout, data, {"epochs": 1})
    assert entry_key(checkout, data, {"epochs": 1}) == key
    # where and when the data was prepared is not the data
    (data / "manifest.json").write_text('{"source": "/tmp/2", "seconds": 0.7}')
    (checkout / "core" / "fbmr" / "__pycache__").mkdir()
    (checkout / "core" / "fbmr" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    assert entry_key(checkout, data, {"epochs": 1}) == key
    changes = [
        lambda: (checkout / "training" / "fbmr" / "a.py").write_text("# changed\n"),
        lambda: (checkout / "export" / "fbmr" / "new.py").write_text(""),
        lambda: (checkout / "uv.lock").write_text("lock 2\n"),
        lambda: (data / "products.parquet").write_bytes(b"other rows"),
    ]
    seen = {key, entry_key(checkout, data, {"epochs": 2})}
    for change in changes:
        change()
        seen.add(entry_key(checkout, data, {"epochs": 1}))
    assert len(seen) == 2 + len(changes)


def test_a_fixture_is_built_once_and_each_session_gets_its_own_copy(
    checkout, tmp_path, monkeypatch
):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    builds: list[Path] = []

    def build(out: Path) -> None:
        builds.append(out)
        out.mkdir()
        (out / "model.pt").write_text("weights")

    first = FixtureCache.open(checkout, checkout / "prepared", {})
    assert first.data != checkout / "prepared"  # the entry's own copy, which the build records
    assert (first.data / "products.parquet").read_bytes() == b"rows"
    one = first.provide("run", tmp_path / "session-1" / "run", build)
    (one / "model.pt").write_text("changed by a test")
    second = FixtureCache.open(checkout, checkout / "prepared", {})
    two = second.provide("run", tmp_path / "session-2" / "run", build)
    assert len(builds) == 1 and second.data == first.data
    assert (two / "model.pt").read_text() == "weights"


def test_a_failed_build_leaves_no_entry(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cache = FixtureCache.open(checkout, checkout / "prepared", {})

    def broken(out: Path) -> None:
        out.mkdir()
        (out / "half.pt").write_text("")
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError):
        cache.provide("run", tmp_path / "run", broken)
    assert cache.entry is not None
    assert [p.name for p in cache.entry.iterdir()] == ["prepared"]  # no run, nothing half-built
    built = cache.provide("run", tmp_path / "run-2", lambda out: shutil.copytree(checkout, out))
    assert (built / "uv.lock").is_file()


def test_turned_off_every_session_builds_its_own(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "0")
    cache = FixtureCache.open(checkout, checkout / "prepared", {})
    assert cache.entry is None and cache.data == checkout / "prepared"
    built = cache.provide("run", tmp_path / "run", lambda out: out.mkdir())
    assert built.is_dir() and not (tmp_path / "cache").exists()
