"""Old index versions removed once a new one is in use, from disk and from Milvus, crash-safe.

Each `fbmr index build` adds a version (a folder, and on Milvus one collection per kind of
query); without this they pile up for good. After a build, all but the newest `keep` versions go,
and never the one CURRENT names. The default keeps three: the new version, the one it replaced
(facade workers that have not reloaded yet still search it, FBMR_INDEX_POLL_S at most) and one
more to go back to by hand.

A version goes in three steps, each safe to be stopped after: its folder is renamed aside
(`.v0001.removing`, atomic: no reader opens it by name any more), then its Milvus collections are
dropped, then the folder is deleted. A prune stopped part-way (a crash, a kill, a Milvus that did
not answer) leaves a `.removing` folder that the next prune finishes. Collections are dropped only
in the Milvus the build wrote to (`milvus_uri`), the one its token is for; a version held in
another Milvus is left there, with a warning, and its folder kept; a collection that a kept
version still names (a compaction's version shares its predecessor's) is never dropped.

Then the update log's generations that no kept version reads from any more are deleted, and the
photos that no listing in the live generation needs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from fbmr.serving.index.live_index import MILVUS, applied_file, read_meta
from fbmr.serving.index.log_generations import Position, generations, live_generation, log_path
from fbmr.serving.index.store import current_version, version_folders
from fbmr.serving.index.updates import prune_photos

log = logging.getLogger(__name__)

KEEP_VERSIONS = 3
_REMOVING = ".removing"


def tidy_up(
    index_dir: Path,
    keep: int = KEEP_VERSIONS,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> None:
    """What follows a new version in use: old versions, log generations and photos removed. A
    removal that fails is logged and finished by the next (the new version is in use already)."""
    try:
        prune_versions(index_dir, keep, milvus_uri, milvus_token)
        prune_generations(index_dir)
        if removed := prune_photos(index_dir):  # deleted or replaced listings' photos
            log.info("%d photos no listing needs any more removed", removed)
    except Exception as err:  # whatever stopped it, the new version is in use
        log.warning("old index versions or log generations not removed yet: %s", err)


def prune_generations(index_dir: Path) -> list[int]:
    """Delete the log generations older than every kept version's (each version replays the log
    from its own position) and than the live one; returns those deleted."""
    try:
        needed = [Position.of(read_meta(path)).generation for path in version_folders(index_dir)]
    except (OSError, ValueError) as err:  # a version's position unknown: keep every generation
        log.warning("update log generations kept: a version's meta.json cannot be read (%s)", err)
        return []
    oldest = min([*needed, live_generation(index_dir)])
    removed = [generation for generation in generations(index_dir) if generation < oldest]
    for generation in removed:
        log_path(index_dir, generation).unlink(missing_ok=True)
    if removed:
        log.info("update log generations removed: %s", removed)
    return removed


def prune_versions(
    index_dir: Path,
    keep: int = KEEP_VERSIONS,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
) -> list[str]:
    """Remove every version of `index_dir` but the newest `keep` and the CURRENT one, and finish
    removals an earlier prune left; returns the versions removed now (leftovers included)."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (got {keep})")
    current = current_version(index_dir)
    for old in version_folders(index_dir)[:-keep]:
        if old.name != current:
            old.rename(index_dir / f".{old.name}{_REMOVING}")
    removed, kept = [], _named(index_dir)
    for aside in sorted(index_dir.glob(f".v*{_REMOVING}")):
        if _drop_collections(aside, index_dir, milvus_uri, milvus_token, kept):
            shutil.rmtree(aside)
            removed.append(aside.name[1 : -len(_REMOVING)])
    if removed:
        log.info("index versions removed (keeping the newest %d): %s", keep, ", ".join(removed))
    return removed


def _named(index_dir: Path) -> set[str]:
    """The Milvus collections that the versions kept name."""
    names: set[str] = set()
    for path in version_folders(index_dir):
        with contextlib.suppress(OSError, ValueError):  # not Milvus, or unreadable
            names |= set(read_meta(path).get("collections", {}).values())
    return names


def _drop_collections(
    folder: Path,
    index_dir: Path,
    milvus_uri: str | None,
    milvus_token: str | None,
    kept: set[str],
) -> bool:
    """Drop the Milvus collections of the version in `folder` that no kept version names, if
    it has any; False when they live in another Milvus than `milvus_uri` (left, with the
    folder that names them)."""
    if not (folder / "meta.json").exists():
        return True  # a version never finished: nothing outside its folder
    try:
        meta = read_meta(folder)
    except (OSError, ValueError) as err:  # another format, or damaged: it may name collections
        log.warning("index version folder %s kept: its meta.json cannot be read (%s)", folder, err)
        return False
    if meta.get("backend") != MILVUS:
        return True
    if meta.get("milvus_uri") != milvus_uri or milvus_uri is None:
        log.warning(
            "index version %s is in another Milvus than this build's: its collections are left "
            "there, and its folder kept as %s",
            meta.get("version"),
            folder.name,
        )
        return False
    from fbmr.serving.index.milvus_index import connect  # pymilvus: the `milvus` extra

    with contextlib.closing(connect(index_dir, milvus_uri, milvus_token)) as client:
        for name in set(meta.get("collections", {}).values()) - kept:
            if client.has_collection(name):
                client.drop_collection(name)
            applied_file(index_dir, name).unlink(missing_ok=True)
    return True
