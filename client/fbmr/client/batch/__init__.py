"""fbmr.client.batch: whole tables of listings at once, beside the one-request library of
`fbmr.client`: `fbmr score` (a catalogue scored resumably) and `fbmr listings put` (a table of
listings put in the live index).

    from fbmr.client.batch import FacadeTarget, ScoreOptions, score
    target = FacadeTarget("http://127.0.0.1:8080")
    summary = score("listings.parquet", Path("scores.parquet"), target, ScoreOptions(top=3))

Where each part lives, in the order a run goes through them:

- `inputs`: the rows read, a seed layout or a table (`read_input`), and their fingerprint.
- `chunks`: the rows numbered and cut into chunks; each chunk written whole, so a stopped run
  resumes where it was.
- `run`: `score`, which drives a run from the input to the assembled output.
- `window`: a window of batches in flight in asyncio, for the two backends below.
- `facade`, `triton`, `ray` (with `ray_session`, which starts or joins Ray): the backends, through
  the facade's HTTP API, straight to Triton's ensembles, or on a Ray actor pool.
- `rows`: one batch's rows planned (what each row sends, or why it cannot be scored) and its
  output built, every row answered or given its reason; `scorer`: `TritonScorer`, a batch
  straight to Triton's ensembles (the triton and ray backends); the facade backend scores its
  rows itself (`score_facade_batch`).
- `listings`: the table `fbmr listings put` reads.

Names are imported on first use (pandas and pyarrow are paid for by what uses them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fbmr.client._lazy import lazy_names

if TYPE_CHECKING:
    from fbmr.client.batch.facade import FacadeTarget
    from fbmr.client.batch.inputs import InputError, read_input
    from fbmr.client.batch.listings import read_listings
    from fbmr.client.batch.rows import ScoreOptions
    from fbmr.client.batch.run import Summary, score
    from fbmr.client.batch.scorer import TritonScorer
    from fbmr.client.batch.triton import TritonTarget

_HOMES = {
    "FacadeTarget": "facade",
    "InputError": "inputs",
    "read_input": "inputs",
    "read_listings": "listings",
    "ScoreOptions": "rows",
    "TritonScorer": "scorer",
    "Summary": "run",
    "score": "run",
    "TritonTarget": "triton",
}
__all__ = [
    "FacadeTarget",
    "InputError",
    "ScoreOptions",
    "Summary",
    "TritonScorer",
    "TritonTarget",
    "read_input",
    "read_listings",
    "score",
]


__getattr__ = lazy_names(__name__, _HOMES)
