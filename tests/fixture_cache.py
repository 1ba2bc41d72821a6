"""The tiny trained run and its exports, kept between test runs: the minutes of CPU that training
and the parity-checked exports take are spent once per change of what builds them, not once per
run of the suite.

An entry's key covers everything its fixtures' output depends on: every file under core/,
training/ and export/ (the code that generates the demo data, trains and exports), uv.lock (the
libraries, torch and onnxruntime included), the Python version, the settings the fixtures pass
(`TINY_TRAINING`, the INT8 gate) and the bytes of the prepared demo data the run is trained on.
A change to any of them is a new key, so an entry is always what this checkout would build now;
a run that changes none (the same commit tested twice, a change to serving, the client, the
benchmarks or the tests) reuses it. Training on CPU is not bit-for-bit repeatable between
machines, so no test may expect exact figures from the tiny run (none does: they check
behaviour, ranges and parity, which hold for any run this code trains).

Safe to share because nothing reaches an entry but whole, finished builds: each is built in a
folder of its own and renamed into place (an interrupted build leaves no entry; two sessions
building at once keep one), and each session works on its own copy, so a test that changes its
copy changes no entry. The run records the path of the data it was trained on; that is the
entry's own copy of the prepared data (same bytes, by the key), so it stays valid as long as the
entry. Entries not used for a day, past the newest few, are removed.

`FBMR_TEST_CACHE`: the folder (default `$XDG_CACHE_HOME/fbmr/test-fixtures`, or under
`~/.cache`); `0` turns the cache off (every fixture built in the session, as on a fresh machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

CACHE_ENV = "FBMR_TEST_CACHE"
# what builds the cached fixtures (relative to the repository)
BUILDING_CODE = ("core", "training", "export")
KEEP_ENTRIES = 3  # the newest entries kept; older ones unused for KEEP_UNUSED_S are removed
KEEP_UNUSED_S = 24 * 3600
SKIPPED_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache"}


def cache_root() -> Path | None:
    """The cache's folder, or None where it is turned off."""
    setting = os.environ.get(CACHE_ENV)
    if setting == "0":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fbmr" / "test-fixtures"


def _files(folder: Path) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        parts = set(path.relative_to(folder).parts)
        if path.is_file() and not parts & SKIPPED_PARTS and path.suffix != ".pyc":
            yield path


def _digest_folder(digest: hashlib._Hash, folder: Path, skip: frozenset[str] = frozenset()) -> None:
    for path in _files(folder):
        if path.name in skip:
            continue
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def entry_key(repository: Path, data: Path, settings: object) -> str:
    """The key of what the fixtures build from `data` with `settings` in this checkout."""
    digest = hashlib.sha256()
    for name in BUILDING_CODE:
        _digest_folder(digest, repository / name)
    digest.update((repository / "uv.lock").read_bytes())
    digest.update(sys.version.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    # the prepared data's manifest also records where and when it was prepared
    _digest_folder(digest, data, skip=frozenset({"manifest.json"}))
    return digest.hexdigest()[:24]


def _replace_atomically(staging: Path, target: Path) -> None:
    """`staging` renamed to `target`; where another session got there first, theirs is kept."""
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)


class FixtureCache:
    """One session's view of its entry: `data` is the prepared data to build from, and
    `provide` hands out a copy of a cached fixture, building it first where it is missing."""

    def __init__(self, entry: Path | None, data: Path) -> None:
        self.entry = entry
        self.data = data

    @classmethod
    def open(cls, repository: Path, data: Path, settings: object) -> FixtureCache:
        """The entry for `data` and `settings` in this checkout (a pass-through where the cache
        is off): its copy of the data made first, older entries pruned."""
        root = cache_root()
        if root is None:
            return cls(None, data)
        root.mkdir(parents=True, exist_ok=True)
        entry = root / entry_key(repository, data, settings)
        entry.mkdir(exist_ok=True)
        os.utime(entry)  # in use: the newest
        prepared = entry / "prepared"
        if not prepared.is_dir():
            staging = entry / f".prepared.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(data, staging)
            _replace_atomically(staging, prepared)
        _prune(root, keep=entry)
        return cls(entry, prepared)

    def provide(self, name: str, dest: Path, build: Callable[[Path], object]) -> Path:
        """`dest` holding fixture `name`: a copy of the entry's, built into it first by
        `build(folder)` where the entry has none; built straight into `dest` without a cache."""
        if self.entry is None:
            build(dest)
            return dest
        cached = self.entry / name
        if not cached.is_dir():
            staging = self.entry / f".{name}.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                build(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _replace_atomically(staging, cached)
        shutil.copytree(cached, dest, symlinks=True)
        return dest


def _prune(root: Path, keep: Path) -> None:
    """Entries past the newest KEEP_ENTRIES that no session used for KEEP_UNUSED_S, removed."""
    entries = sorted(
        (p for p in root.iterdir() if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    now = time.time()
    for old in entries[KEEP_ENTRIES - 1 :]:
        if now - old.stat().st_mtime > KEEP_UNUSED_S:
            shutil.rmtree(old, ignore_errors=True)
