"""`FacadeState` during a model version swap, against scripted stand-ins for Triton's readiness and
the rollout (the swap through a real Triton is tests/serving/triton/test_versions.py and
test_rollout.py): a request refused while Triton switches waits for the switch instead of
failing, and gives up after `swap_wait_s`; one rollout step runs at a time."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from fbmr.core.artifacts import ModelArtifacts, exported_versions
from fbmr.core.contract import ENSEMBLE_NAMES, Kind
from fbmr.serving.metrics import Metrics
from fbmr.serving.service.state import FacadeState
from fbmr.serving.settings import FacadeSettings
from fbmr.serving.triton.versions import RolloutStatus


class ScriptedTriton:
    """Ready at the versions in `serving` once `after_s` have passed; not ready before."""

    def __init__(self, serving: set[int], after_s: float) -> None:
        self.serving, self.from_time, self.asked = serving, time.monotonic() + after_s, 0

    async def ready(self, version: int | None = None, kinds=tuple(Kind)) -> bool:
        self.asked += 1
        return time.monotonic() >= self.from_time and version in self.serving


@pytest.fixture
def two_versions(artifact_repository, tmp_path) -> Path:
    """A repository whose ensembles hold version 1 and a copy of it as version 2."""
    repository = tmp_path / "repository"
    for name in ENSEMBLE_NAMES:
        for version in ("1", "2"):
            shutil.copytree(artifact_repository / name / "1", repository / name / version)
    return repository


class ScriptedRollout:
    """Serves version `before`, then `after` once `after_s` have passed; each step takes
    `step_s` (in the thread the facade runs it in)."""

    def __init__(self, before: int, after: int, after_s: float, step_s: float = 0.0,
                 refused: dict[int, str] | None = None) -> None:  # fmt: skip
        self.before, self.after, self.from_time = before, after, time.monotonic() + after_s
        self.step_s, self.refused, self.steps = step_s, refused or {}, 0

    def converge(self) -> RolloutStatus:
        self.steps += 1
        time.sleep(self.step_s)  # the stimulus: a rollout step that takes a while
        in_use = self.after if time.monotonic() >= self.from_time else self.before
        return RolloutStatus(in_use, None, self.refused)


def state_on(
    repository: Path, triton: ScriptedTriton, wait_s: float, rollout: ScriptedRollout
) -> FacadeState:
    settings = FacadeSettings(model_repository=repository, swap_wait_s=wait_s)
    return FacadeState(settings, triton, None, rollout, Metrics())  # type: ignore[arg-type]


def test_a_refused_request_waits_for_the_new_version(two_versions):
    assert exported_versions(two_versions) == [1, 2]

    async def scenario():
        rollout = ScriptedRollout(1, 2, after_s=0.6)
        state = state_on(two_versions, ScriptedTriton({2}, after_s=0.6), 10, rollout)
        state._artifacts = ModelArtifacts.load(two_versions, version=1)
        started = time.monotonic()
        # three requests refused at version 1 while Triton swaps: all continue at version 2
        answers = await asyncio.gather(*(state.after_refusal(Kind.text, 1) for _ in range(3)))
        return answers, time.monotonic() - started, state

    answers, waited, state = asyncio.run(scenario())
    assert [a.version for a in answers] == [2, 2, 2]
    assert state.artifacts().version == 2
    # not before the switch (0.6 s away); the upper bound is room for a loaded machine, not a
    # speed requirement (the wait ends within a 0.2 s poll of the switch)
    assert 0.5 < waited < 5


def test_the_same_version_back_is_retried_on(two_versions):
    async def scenario():
        rollout = ScriptedRollout(1, 1, after_s=0)
        state = state_on(two_versions, ScriptedTriton({1}, after_s=0.3), 10, rollout)
        state._artifacts = ModelArtifacts.load(two_versions, version=1)
        return await state.after_refusal(Kind.image, 1), state

    again, state = asyncio.run(scenario())
    assert again is not None and again.version == 1  # version 2 never served: not adopted
    assert state.artifacts().version == 1


def test_the_wait_is_bounded(two_versions):
    triton = ScriptedTriton(set(), after_s=0)

    async def scenario():
        state = state_on(two_versions, triton, 0.5, ScriptedRollout(1, 1, after_s=0))
        state._artifacts = ModelArtifacts.load(two_versions, version=1)
        started = time.monotonic()
        results = await asyncio.gather(*(state.after_refusal(Kind.combined, 1) for _ in range(4)))
        return results, time.monotonic() - started

    results, waited = asyncio.run(scenario())
    assert results == [None] * 4
    # all four share one deadline's worth of waiting (0.5 s), not four in turn (2 s): under
    # 1.5 s leaves a loaded machine room and still tells the two apart
    assert waited < 1.5
    # one request polls at a time, every 0.2 s: 3 asks in 0.5 s (four polling each would ask
    # about 12; a slower machine asks fewer, never more)
    assert triton.asked <= 6


def test_one_rollout_step_at_a_time_and_refusals_in_the_metrics(two_versions):
    rollout = ScriptedRollout(1, 1, after_s=0, step_s=0.5, refused={2: "image_encoder: bad"})

    async def scenario():
        state = state_on(two_versions, ScriptedTriton({1}, after_s=0), 10, rollout)
        # five callers at once (requests refused at once, the watcher): one step serves them all
        moved = await asyncio.gather(*(state.converge(than=1) for _ in range(5)))
        return moved, state

    moved, state = asyncio.run(scenario())
    assert moved == [False] * 5 and rollout.steps == 1
    assert state.artifacts().version == 1  # adopted from the rollout's answer
    exposition = state.metrics.exposition().decode()
    assert 'fbmr_model_version_refused{version="2"} 1.0' in exposition
    assert "fbmr_model_version 1.0" in exposition
    assert (
        state.rollout_status.summary() == "serving version 1; version 2 refused: image_encoder: bad"
    )
