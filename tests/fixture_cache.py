"""The tiny trained run and its exports, kept between test runs: the minutes of CPU that training
and the parity-checked exports take are spent once per change of what builds them, not once per
run of the suite.

An entry's key covers everything its fixtures' output depends on: every file under core/,
training/ and export/ (the code that generates the demo data, trains and exports), the fixtures'
own code (tests/conftest.py and this module), uv.lock and the installed torch, onnx and
onnxruntime, the Python version and the machine's architecture, the settings the fixtures pass
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
entry. Opening an entry and pruning old ones happen under a lock; entries past the newest few
that no session opened for two hours (a whole test run takes well under one) are removed, with
build folders that killed sessions left behind. Where the cache's folder cannot be written, the
cache is off.

`FBMR_TEST_CACHE`: the folder (default `$XDG_CACHE_HOME/fbmr/test-fixtures`, or under
`~/.cache`); `0` turns the cache off (every fixture built in the session, as on a fresh machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

CACHE_ENV = "FBMR_TEST_CACHE"
# what builds the cached fixtures (relative to the repository)
BUILDING_CODE = ("core", "training", "export")
FIXTURE_CODE = ("tests/conftest.py", "tests/fixture_cache.py")
LIBRARIES = ("torch", "onnx", "onnxruntime")
KEEP_ENTRIES = 3  # the newest entries kept; older ones unused for KEEP_UNUSED_S are removed
KEEP_UNUSED_S = 2 * 3600
LOCK = ".lock"
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
    for name in (*FIXTURE_CODE, "uv.lock"):
        digest.update((repository / name).read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library}=={importlib.metadata.version(library)}".encode())
    digest.update(f"{sys.version} {platform.machine()}".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    # the prepared data's manifest also records where and when it was prepared
    _digest_folder(digest, data, skip=frozenset({"manifest.json"}))
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """The cache's lock, held while an entry is opened and old ones pruned."""
    with open(root / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _staging(folder: Path, name: str) -> Path:
    """A new folder in `folder` to build `name` in, named apart from any other session's."""
    return Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}."))


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
        try:
            root.mkdir(parents=True, exist_ok=True)
            key = entry_key(repository, data, settings)
            with _locked(root):
                entry = root / key
                entry.mkdir(exist_ok=True)
                os.utime(entry)  # in use: the newest
                prepared = entry / "prepared"
                if not prepared.is_dir():
                    staging = _staging(entry, "prepared")
                    shutil.copytree(data, staging, dirs_exist_ok=True)
                    _replace_atomically(staging, prepared)
                _prune(root, keep=entry)
        except OSError as err:  # a read-only or full home: build in the session instead
            print(f"fixture cache off ({root}: {err})", file=sys.stderr)
            return cls(None, data)
        return cls(entry, prepared)

    def provide(self, name: str, dest: Path, build: Callable[[Path], object]) -> Path:
        """`dest` holding fixture `name`: a copy of the entry's, built into it first by
        `build(folder)` where the entry has none; built straight into `dest` without a cache."""
        if self.entry is None:
            build(dest)
            return dest
        cached = self.entry / name
        if not cached.is_dir():
            staging = _staging(self.entry, name)
            staging.rmdir()  # the builds write a folder of their own
            try:
                build(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _replace_atomically(staging, cached)
        shutil.copytree(cached, dest, symlinks=True)
        return dest


def _prune(root: Path, keep: Path) -> None:
    """Entries past the newest KEEP_ENTRIES that no session opened for KEEP_UNUSED_S, and build
    folders older than that (left by a killed session), removed. Called under the lock."""
    now = time.time()

    def age(path: Path) -> float:
        try:
            return now - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    entries = sorted((p for p in root.iterdir() if p.is_dir() and p != keep), key=age)
    for old in entries[KEEP_ENTRIES - 1 :]:
        if age(old) > KEEP_UNUSED_S:
            shutil.rmtree(old, ignore_errors=True)
    for staging in root.glob("*/.*.*"):
        if staging.is_dir() and age(staging) > KEEP_UNUSED_S:
            shutil.rmtree(staging, ignore_errors=True)
