"""Where a run directory keeps what each stage writes, in one place.

The stages write into a run directory and the later stages, export and the benchmarks read from
it; every file name of that layout is defined here, so no stage spells another's paths:

    RUN/
      config.json          settings of the latest invocation
      label_map.json       class names in logit order
      word2vec/            vectors.kv (gensim KeyedVectors), tokenizer.json, tsne.png, summary.json
      image/               best.pt, last.pt, history.json, metrics.json, curves.png, confusion.png,
                           features/<split>.pt (cached mode: trunk features per split)
      text/                best.pt, last.pt, history.json, metrics.json, curves.png, confusion.png
      fusion/              best.pt, last.pt, history.json, metrics.json, curves.png, confusion.png,
                           out_of_fold.pt (stacking fit out of fold)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.json"
LABEL_MAP = "label_map.json"

# Every trained stage's folder
BEST = "best.pt"  # the model with the best validation top-1: what later stages and export read
LAST = "last.pt"  # model and optimizer after the latest epoch: what a resumed run reads
HISTORY = "history.json"
METRICS = "metrics.json"  # written last: its presence marks the stage complete
CURVES = "curves.png"
CONFUSION = "confusion.png"

# The word2vec stage's folder
VECTORS = "vectors.kv"
TOKENIZER = "tokenizer.json"
SUMMARY = "summary.json"  # written last: its presence marks the stage complete
TSNE_PLOT = "tsne.png"

# The image stage's trunk-feature cache (cached mode)
FEATURES = "features"

# The fusion stage's out-of-fold predictions of the train split, with which fold's models gave
# each and which products those models saw (fbmr.training.stages.crossfit)
OUT_OF_FOLD = "out_of_fold.pt"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def label_map(self) -> Path:
        return self.root / LABEL_MAP

    def stage(self, stage: str) -> Path:
        """The folder of a stage: word2vec, image, text or fusion."""
        return self.root / str(stage)

    def best(self, stage: str) -> Path:
        return self.stage(stage) / BEST

    def last(self, stage: str) -> Path:
        return self.stage(stage) / LAST

    def metrics(self, stage: str) -> Path:
        return self.stage(stage) / METRICS

    @property
    def word2vec(self) -> Path:
        return self.stage("word2vec")

    @property
    def tokenizer(self) -> Path:
        return self.word2vec / TOKENIZER

    @property
    def vectors(self) -> Path:
        return self.word2vec / VECTORS

    @property
    def word2vec_summary(self) -> Path:
        return self.word2vec / SUMMARY

    def image_features(self, split: str) -> Path:
        """The image stage's cached trunk features of one split (cached mode)."""
        return self.stage("image") / FEATURES / f"{split}.pt"


def stage_complete(stage_dir: Path) -> bool:
    """Whether a trained stage's folder holds its best model and its final metrics."""
    return (stage_dir / METRICS).is_file() and (stage_dir / BEST).is_file()
