"""The cache of built fixtures between test runs (tests/fixture_cache.py): a key that moves with
anything that builds them, one build per key, copies that cannot change the entry, and no entry
from a build that failed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.fixture_cache import BUILDING_CODE, CACHE_ENV, FIXTURE_CODE, FixtureCache, entry_key


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A stand-in repository: the folders the key reads, a lock file, and prepared data."""
    root = tmp_path / "repo"
    for name in BUILDING_CODE:
        (root / name / "fbmr").mkdir(parents=True)
        (root / name / "fbmr" / "a.py").write_text(f"# {name}\n")
    (root / "uv.lock").write_text("lock 1\n")
    for name in FIXTURE_CODE:
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(f"# {name}\n")
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
        lambda: (checkout / "tests" / "conftest.py").write_text("# builds otherwise\n"),
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


def test_a_cache_folder_that_cannot_be_written_turns_the_cache_off(checkout, tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))
    cache = FixtureCache.open(checkout, checkout / "prepared", {})
    assert cache.entry is None and cache.data == checkout / "prepared"


def test_old_entries_past_the_newest_are_pruned_and_recent_ones_kept(
    checkout, tmp_path, monkeypatch
):
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    long_ago = time.time() - 3 * 3600
    for i in range(5):
        (root / f"old-{i}" / ".run.x1").mkdir(parents=True)
        for folder in (root / f"old-{i}" / ".run.x1", root / f"old-{i}"):
            os.utime(folder, (long_ago - i, long_ago - i))
    # opened by sessions within the last hour, more of them than the newest kept: all in use
    recent = {f"recent-{i}" for i in range(4)}
    for i, name in enumerate(sorted(recent)):
        (root / name).mkdir()
        os.utime(root / name, (time.time() - 600 * i, time.time() - 600 * i))
    cache = FixtureCache.open(checkout, checkout / "prepared", {})
    assert cache.entry is not None
    kept = {p.name for p in root.iterdir() if p.is_dir()}
    assert kept == {cache.entry.name, *recent}  # the old ones, past the newest three: gone
    assert not any(root.glob("old-*/.run.x1"))  # killed sessions' builds: gone
