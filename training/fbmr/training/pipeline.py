"""Runs training stages in order on a run directory, skipping the ones already complete."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from fbmr.training.config import Stage, TrainConfig
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.engine import pick_device, seed_everything
from fbmr.training.layout import RunLayout, stage_complete
from fbmr.training.metrics import Report
from fbmr.training.stages.fusion import train_fusion
from fbmr.training.stages.image import train_image
from fbmr.training.stages.text import train_text
from fbmr.training.stages.word2vec import train_word2vec

log = logging.getLogger(__name__)

ORDER = (Stage.word2vec, Stage.image, Stage.text, Stage.fusion)
# What each stage reads from the stages before it.
NEEDS: dict[Stage, Callable[[RunLayout], tuple[Path, ...]]] = {
    Stage.word2vec: lambda run: (),
    Stage.image: lambda run: (),
    Stage.text: lambda run: (run.tokenizer, run.vectors),
    Stage.fusion: lambda run: (run.tokenizer, run.best(Stage.image), run.best(Stage.text)),
}


class StageError(RuntimeError):
    """A stage cannot run: what it needs from an earlier stage is missing."""


def _complete(stage: Stage, run: RunLayout) -> bool:
    if stage == Stage.word2vec:
        return run.word2vec_summary.is_file()
    return stage_complete(run.stage(stage))


def train(
    config: TrainConfig, run_dir: Path, stage: Stage = Stage.all, force: bool = False
) -> dict[str, Report]:
    """Train `stage` (or all of them in order) into `run_dir`; returns each stage's report.

    A stage that is complete is skipped unless `force`; one that was interrupted resumes from
    its last checkpoint.
    """
    data = PreparedDataset(config.data)
    run = RunLayout(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run.config)
    data.label_map.save(run.label_map)
    device = pick_device(config.device)
    stages = ORDER if stage == Stage.all else (stage,)
    runners: dict[Stage, Callable[[], Report]] = {
        Stage.word2vec: lambda: train_word2vec(config, data, run.word2vec),
        Stage.image: lambda: train_image(config, data, run_dir, device),
        Stage.text: lambda: train_text(config, data, run_dir, device),
        Stage.fusion: lambda: train_fusion(config, data, run_dir, device),
    }
    results = {}
    for current in stages:
        if _complete(current, run) and not force:
            log.info(
                "%s: complete in %s, skipped (--force retrains it)", current, run.stage(current)
            )
            results[str(current)] = _read_report(current, run)
            continue
        missing = [str(p.relative_to(run_dir)) for p in NEEDS[current](run) if not p.exists()]
        if missing:
            raise StageError(
                f"{current} needs {', '.join(missing)} in {run_dir}; train the earlier stages "
                f"first (fbmr train all, or the stage that writes them)"
            )
        if force and run.stage(current).exists():
            shutil.rmtree(run.stage(current))
        seed_everything(config.seed)
        results[str(current)] = runners[current]()
    return results


def _read_report(stage: Stage, run: RunLayout) -> Report:
    path = run.word2vec_summary if stage == Stage.word2vec else run.metrics(stage)
    report: Report = json.loads(path.read_text())
    return report
