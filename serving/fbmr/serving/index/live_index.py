"""What every engine of the similar-listing index shares: one loaded index version, searched
by a query embedding of a given kind, with the live updates of its directory applied.

An engine (FAISS in the facade's memory, `fbmr.serving.index.store`; Milvus, local or a cluster,
`fbmr.serving.index.milvus_index`) implements the search and how a put or a delete changes it; what
an update means is decided here once: a record embedded by another model version than the
index's, or for other kinds, is never mixed in (its vectors live in another embedding space).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.serving.index.build import normalise
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.log_generations import Position, write_durably
from fbmr.serving.index.updates import Update, UpdateLog

log = logging.getLogger(__name__)

INDEX_FORMAT = "fbmr.index/1"
FAISS = "faiss"
MILVUS = "milvus"


def is_milvus_lite(milvus_uri: str) -> bool:
    """Whether a version's `milvus_uri` names a milvus-lite file (relative to the index
    directory; one process only) rather than a Milvus server's URL."""
    return "://" not in milvus_uri


def read_meta(path: Path) -> dict[str, Any]:
    """An index version's meta.json; a folder that is not an fbmr index is a ValueError."""
    meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
    if meta.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not an fbmr index (format {meta.get('format')!r})")
    return meta


def applied_file(index_dir: Path, key: str) -> Path:
    """Where a shared engine's copy `key` records how far it holds the log."""
    return index_dir / f".applied.{key}.json"


def _read_position(path: Path) -> Position | None:
    try:
        return Position(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Hit:
    """A listing found, its cosine similarity to the query, and the score it was ranked by (the
    similarity, or with the prior on its category: `fbmr.serving.index.ranked`)."""

    listing: dict[str, Any]
    score: float
    rank_score: float | None = None

    @property
    def ranked_by(self) -> float:
        return self.score if self.rank_score is None else self.rank_score


class ReadWriteLock:
    """Many searches at once, or one update: FAISS searches may run concurrently, but not
    beside an `add` to the same index. A waiting update goes before new searches, so a steady
    stream of searches cannot hold updates back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writers = 0  # waiting or writing
        self._write = threading.Lock()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._writers == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers += 1
            self._cond.wait_for(lambda: self._readers == 0)
        # one writer at a time among themselves
        with self._write:
            try:
                yield
            finally:
                with self._cond:
                    self._writers -= 1
                    self._cond.notify_all()


class LiveIndex(ABC):
    """One index version (folder `path`, beside the other versions and the update log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = read_meta(path)
        self.kinds = tuple(Kind(k) for k in self.meta["kinds"])
        # the updates made since this version was built, then those made while it serves;
        # an engine applies them (`catch_up`) once it has loaded
        self.updates = UpdateLog.resume(path.parent, Position.of(self.meta))
        # one applier at a time (the watcher and the routes all call catch_up), and for engines
        # whose search cannot run beside a change (FAISS), no search meanwhile
        self._lock = ReadWriteLock()

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def model_version(self) -> int | None:
        """The model version whose embeddings the index holds (None for an index from before
        versions were recorded)."""
        version = self.meta.get("model_version")
        return None if version is None else int(version)

    # An engine whose index lives outside the process (Milvus) is one copy that every worker
    # shares: each record is applied to it once, in log order, by whichever worker gets there
    # first (the one that acknowledges it, unless another was quicker), under a lock that all
    # workers take; a file beside the log records how far that copy holds the log. A record
    # applied and not yet recorded so (its applier killed) is applied again, in order, by the
    # next, before any update after it is acknowledged. So a delete, once acknowledged, is never
    # undone by another worker replaying an older put.
    shared = False

    def catch_up(self) -> int:
        """Apply the log's records not seen yet; returns how many were read."""
        if self.shared:
            return self._catch_up_shared()
        if not self.updates.has_new():  # nothing new: no lock, searches go on
            return 0
        with self._lock.writing():
            return self._apply(self.updates.read_new())

    def _catch_up_shared(self) -> int:
        index_dir = self.path.parent
        applied = applied_file(index_dir, self._shared_key())
        if (done := _read_position(applied)) is not None:
            self.updates = UpdateLog(index_dir, done)
            if not self.updates.has_new():  # nothing new: no lock
                return 0
        with open(index_dir / ".applying.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
            start = _read_position(applied) or Position.of(self.meta)
            self.updates = UpdateLog.resume(index_dir, start)
            if read := self._apply(self.updates.read_new()):
                write_durably(applied, json.dumps(self.updates.position._asdict()).encode())
        return read

    def _apply(self, updates: list[Update]) -> int:
        """Apply `updates` in order (a put this index cannot hold skipped); how many there were."""
        for update in updates:
            if update.op == "delete":
                self._delete(update.id)
            elif self._fits(update):
                self._put(update)
        return len(updates)

    def _shared_key(self) -> str:
        """What names the shared copy this version searches (a version compacted from another
        shares its copy); engines with `shared` say."""
        raise NotImplementedError

    def _fits(self, update: Update) -> bool:
        assert update.vectors is not None
        # an index from before versions were recorded takes what the served version embeds
        same_space = self.model_version in (None, update.model_version)
        if same_space and set(update.vectors) == set(self.kinds):
            return True
        log.warning(
            "update of listing %s skipped: embedded by model version %s for %s, and index %s "
            "holds model version %s for %s",
            update.id, update.model_version, sorted(update.vectors),
            self.version, self.model_version, sorted(self.kinds),
        )  # fmt: skip
        return False

    @abstractmethod
    def _put(self, update: Update) -> None:
        """Add the listing of `update`, or replace the one of its id."""

    @abstractmethod
    def _delete(self, listing_id: str) -> None:
        """Remove a listing; nothing when it is not there."""

    def search(
        self,
        kind: Kind,
        embedding: NDArray[np.float32],
        k: int,
        where: ListingFilter | None = None,
    ) -> list[Hit]:
        """The `k` live listings nearest to `embedding` among those that pass `where`."""
        if kind not in self.kinds:
            raise KeyError(f"this index has no {kind.value} embeddings")
        return self._search(kind, normalise(embedding[None]), k, where or ListingFilter())

    @abstractmethod
    def _search(
        self, kind: Kind, query: NDArray[np.float32], k: int, where: ListingFilter
    ) -> list[Hit]:
        """The search itself: `query` is one L2-normalised row."""

    @abstractmethod
    def __contains__(self, listing_id: str) -> bool: ...

    @abstractmethod
    def get(self, listing_id: str) -> dict[str, Any] | None:
        """The listing's stored fields (id, name, category, price, location), None if absent."""

    @abstractmethod
    def __len__(self) -> int:
        """How many live listings it holds."""
