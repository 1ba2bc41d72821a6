"""What `fbmr index compact` costs: how long the writers wait, how long the whole compaction
takes, and how much smaller the log gets.

    uv run python bench/compaction.py --listings 100000 --puts 20000 --distinct 5000

A FAISS index of --listings synthetic listings (bench/faiss_scale.py's ClusteredVectors, the
three kinds of embedding at --dim), then a log of --puts puts over --distinct listing ids and
--deletes deletes, as the facade writes them. While a writer thread keeps putting listings, the
log is compacted; printed: the compaction's time in all and its rotation's (the writers' lock is
held through it), the longest and median wait of an append during the compaction against
before it, and the log's records and bytes before and after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from faiss_scale import ClusteredVectors
from numpy.typing import NDArray

from fbmr.core.contract import Kind
from fbmr.serving.index import compaction
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.store import save_version
from fbmr.serving.index.updates import Update, UpdateLog

KINDS = tuple(Kind)


def _put(listing_id: str, vector: NDArray[Any]) -> Update:
    listing = {"id": listing_id, "name": listing_id, "category": "c", "price": None}
    source = {"name": listing_id, "description": "", "photo": "ab12"}
    vectors = {kind: vector for kind in KINDS}
    return Update(
        "put", listing_id, model_version=1, listing=listing, source=source, vectors=vectors
    )


def _appends(log: UpdateLog, space: ClusteredVectors, stop: threading.Event) -> list[float]:
    """Put listings until `stop`; returns each append's time in seconds."""
    waits, vectors, i = [], space.sample(1000, seed=9), 0
    while not stop.is_set():
        started = time.perf_counter()
        log.append(_put(f"writer-{i}", vectors[i % len(vectors)]))
        waits.append(time.perf_counter() - started)
        i += 1
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--puts", type=int, default=20_000)
    parser.add_argument("--distinct", type=int, default=5_000)
    parser.add_argument("--deletes", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    space = ClusteredVectors(args.dim, seed=1)
    vectors = space.sample(args.listings, seed=2)
    listings = [{"id": str(i), "name": str(i), "category": "c"} for i in range(args.listings)]
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp)
        save_version(index_dir, {k: vectors for k in KINDS}, listings, {"model_version": 1},
                     IndexType.exact)  # fmt: skip
        log, puts = UpdateLog(index_dir), space.sample(args.puts, seed=4)
        for vector in puts:
            log.append(_put(f"put-{rng.integers(args.distinct)}", vector))
        for i in rng.choice(args.listings, args.deletes, replace=False):
            log.append(Update("delete", str(i)))

        before = _appends(log, space, _after(threading.Event(), 1.0))
        stop, waits = threading.Event(), list[float]()
        writer = threading.Thread(target=lambda: waits.extend(_appends(log, space, stop)))
        writer.start()
        started = time.perf_counter()
        done = compaction.compact(index_dir)
        total_s = time.perf_counter() - started
        stop.set()
        writer.join()
    result = {
        "listings": args.listings,
        "log_records_before": done.records_before,
        "log_records_after": done.records_after,
        "log_mb_before": done.bytes_before / 2**20,
        "log_mb_after": done.bytes_after / 2**20,
        "compaction_s": total_s,
        "writers_held_s": done.writers_held_s,
        "append_ms_before_p50": 1000 * float(np.median(before)),
        "append_ms_during_p50": 1000 * float(np.median(waits)),
        "append_ms_during_max": 1000 * max(waits),
        "appends_during": len(waits),
    }
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compaction.json").write_text(json.dumps(result, indent=2))


def _after(event: threading.Event, seconds: float) -> threading.Event:
    """`event`, set `seconds` from now."""
    threading.Timer(seconds, event.set).start()
    return event


if __name__ == "__main__":
    main()
