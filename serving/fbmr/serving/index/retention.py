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
another Milvus is left there, with a warning, and its folder kept.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from fbmr.serving.index.live_index import MILVUS, read_meta
from fbmr.serving.index.store import current_version, version_folders

log = logging.getLogger(__name__)

KEEP_VERSIONS = 3
_REMOVING = ".removing"


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
    removed = []
    for aside in sorted(index_dir.glob(f".v*{_REMOVING}")):
        if _drop_collections(aside, index_dir, milvus_uri, milvus_token):
            shutil.rmtree(aside)
            removed.append(aside.name[1 : -len(_REMOVING)])
    if removed:
        log.info("index versions removed (keeping the newest %d): %s", keep, ", ".join(removed))
    return removed


def _drop_collections(
    folder: Path, index_dir: Path, milvus_uri: str | None, milvus_token: str | None
) -> bool:
    """Drop the Milvus collections of the version in `folder`, if it has any; False when they
    live in another Milvus than `milvus_uri` (left, with the folder that names them)."""
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
        for name in meta.get("collections", {}).values():
            if client.has_collection(name):
                client.drop_collection(name)
    return True
