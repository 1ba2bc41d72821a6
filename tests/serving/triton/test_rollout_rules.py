"""The rollout's rules without a Triton (the rollout against a real one is test_rollout.py): which
version it tries next, when a refused version is tried again, the pin file, and what it reports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tritonclient.grpc import InferenceServerClient

from fbmr.core.artifacts import ARTIFACTS_FILE, REPOSITORY_MANIFEST
from fbmr.core.contract import ARTIFACTS_ENSEMBLE, ENSEMBLE_NAMES
from fbmr.serving.triton.rollout import Rollout
from fbmr.serving.triton.smoke import ENSEMBLE_LOAD_TRIES
from fbmr.serving.triton.versions import (
    PIN_FILE,
    RolloutStatus,
    VersionRefused,
    read_pin,
    write_pin,
)
from tests.helpers import free_ports


def exported(repository: Path, versions: list[int], published: int | None) -> Path:
    for version in versions:
        folder = repository / ARTIFACTS_ENSEMBLE / str(version)
        folder.mkdir(parents=True)
        (folder / ARTIFACTS_FILE).write_text("{}")
        (repository / "image_encoder" / str(version)).mkdir(parents=True)
        (repository / "image_encoder" / str(version) / "model.onnx").write_bytes(b"weights")
    if published is not None:
        (repository / REPOSITORY_MANIFEST).write_text(json.dumps({"version": published}))
    return repository


@pytest.fixture
def rollout(tmp_path):
    (closed,) = free_ports(1)
    client = InferenceServerClient(f"127.0.0.1:{closed}")
    rollout = Rollout(exported(tmp_path / "repo", [1, 2, 3], published=3), client)
    yield rollout
    rollout.close()


def test_a_version_still_being_published_is_not_a_candidate(tmp_path):
    (closed,) = free_ports(1)
    repository = exported(tmp_path / "repo", [1, 2], published=1)
    assert Rollout(repository, InferenceServerClient(f"127.0.0.1:{closed}")).versions() == [1]


def test_newer_versions_are_tried_newest_first_and_nothing_older_while_one_serves(rollout):
    versions = rollout.versions()
    assert rollout._candidates(versions, None, loaded=1) == [3, 2]
    assert rollout._candidates(versions, None, loaded=3) == []
    # nothing served (a fresh or restarted Triton): every version, newest first
    assert rollout._candidates(versions, None, loaded=None) == [3, 2, 1]


def test_a_refused_version_is_skipped_until_its_files_change(rollout):
    versions = rollout.versions()
    rollout._refusals.add(rollout.repository, 3, "image_encoder: bad")
    assert rollout._candidates(versions, None, loaded=1) == [2]
    assert rollout.status().refused == {3: "image_encoder: bad"}
    (rollout.repository / "image_encoder" / "3" / "model.onnx").write_bytes(b"copied again")
    assert rollout._candidates(versions, None, loaded=1) == [3, 2]
    assert rollout.status().refused == {}


def test_a_pin_is_the_only_candidate_and_a_missing_one_is_ignored(rollout):
    versions = rollout.versions()
    assert rollout._candidates(versions, pinned=1, loaded=3) == [1]  # a rollback
    assert rollout._candidates(versions, pinned=1, loaded=1) == []
    rollout._refusals.add(rollout.repository, 2, "text_encoder: raises")
    assert rollout._candidates(versions, pinned=2, loaded=1) == []
    assert rollout._candidates(versions, pinned=9, loaded=1) == [3]  # 2 refused


def test_the_pin_file_round_trips_and_a_broken_one_means_no_pin(tmp_path):
    assert read_pin(tmp_path) is None
    write_pin(tmp_path, 4)
    assert read_pin(tmp_path) == 4
    write_pin(tmp_path, None)
    assert not (tmp_path / PIN_FILE).exists() and read_pin(tmp_path) is None
    (tmp_path / PIN_FILE).write_text("{not json")
    assert read_pin(tmp_path) is None


def test_the_status_in_words():
    status = RolloutStatus(1, 1, {2: "image_encoder: half a file", 3: "probabilities of shape"})
    assert status.summary() == (
        "serving version 1; pinned to version 1; version 2 refused: image_encoder: half a file; "
        "version 3 refused: probabilities of shape"
    )
    assert RolloutStatus(None, None, {}).summary() == "serving no version"
    removed = RolloutStatus(4, None, {}, removed=True)
    assert removed.summary() == "serving version 4 (removed from the repository; still loaded)"


# Triton's words when a load it started itself (an ensemble's, after a model it composes
# loaded) overtakes ours
OVERTAKEN = (
    "Newer operation has been applied to the model lifecycle, current load operation is out-dated."
)


class _Triton:
    """What `_load_ensembles` sees of Triton: ensembles loaded one by one at a version, and one
    that Triton's own re-load puts back on the old version `reverts` times, after dropping our
    loads of it `overtakes` times (its message when its own load overtakes ours); its own loads
    and unloads under way for the first `busy` looks at its repository index."""

    def __init__(
        self,
        reverts: int,
        overtakes: int = 0,
        refusal: str = OVERTAKEN,
        busy: tuple[bool, ...] = (),
    ) -> None:
        self.at: dict[str, int] = {}
        self.loads: list[str] = []
        self.events: list[str] = []  # "busy", "quiet" (index looks) and each load, in order
        self.reverts = reverts
        self.overtakes = overtakes
        self.refusal = refusal
        self.busy = busy

    def load(self, name: str, versions: list[int], pin: int | None = None) -> None:
        (version,) = versions
        self.loads.append(name)
        self.events.append(name)
        if self.overtakes > 0 and name == "text_classifier":
            self.overtakes -= 1
            raise VersionRefused(f"load failed for model 'text_classifier': {self.refusal}")
        self.at[name] = version
        if self.reverts and name == "text_classifier":  # a re-load with its old config
            self.reverts -= 1
            self.at[name] = 1

    def get_model_repository_index(
        self, as_json: bool, client_timeout: float
    ) -> dict[str, list[dict[str, str]]]:
        """Loading for each True of `busy` in turn, then quiet."""
        busy = bool(self.busy) and self.busy[0]
        self.busy = self.busy[1:]
        self.events.append("busy" if busy else "quiet")
        state = "LOADING" if busy else "READY"
        return {"models": [{"name": "text_encoder", "version": "2", "state": state}]}

    def is_model_ready(self, name: str, version: str) -> bool:
        return self.at.get(name) == int(version)


def faked(
    rollout: Rollout,
    monkeypatch: pytest.MonkeyPatch,
    reverts: int,
    overtakes: int = 0,
    refusal: str = OVERTAKEN,
    busy: tuple[bool, ...] = (),
) -> _Triton:
    """`rollout` loading ensembles into a _Triton, with no wait for them to settle."""
    triton = _Triton(reverts, overtakes, refusal, busy)
    monkeypatch.setattr("fbmr.serving.triton.rollout.ENSEMBLE_SETTLE_S", 0)
    monkeypatch.setattr("fbmr.serving.triton.rollout.QUIET_WINDOW_S", 0.01)
    monkeypatch.setattr(rollout, "_load", triton.load)
    for method in ("is_model_ready", "get_model_repository_index"):
        monkeypatch.setattr(rollout.client, method, getattr(triton, method))
    return triton


@pytest.mark.parametrize("reverts", [0, 2])
def test_an_ensemble_put_back_on_the_old_version_is_loaded_again(rollout, monkeypatch, reverts):
    triton = faked(rollout, monkeypatch, reverts)
    rollout._load_ensembles(2)
    assert triton.at == dict.fromkeys(ENSEMBLE_NAMES, 2)
    assert triton.loads == [*ENSEMBLE_NAMES, *["text_classifier"] * reverts]


def test_ensembles_are_loaded_one_at_a_time_once_tritons_own_loads_have_ended(rollout, monkeypatch):
    """tritonserver died (SIGSEGV in its model lifecycle) with our ensemble loads landing
    beside its own re-loads of them."""
    # busy, a moment of quiet (not enough), busy again, then quiet for good
    triton = faked(rollout, monkeypatch, reverts=0, busy=(True, True, False, True))
    monkeypatch.setattr("fbmr.serving.triton.rollout.QUIET_WINDOW_S", 0.2)
    started = time.monotonic()
    rollout._load_ensembles(2)
    first_load = triton.events.index(ENSEMBLE_NAMES[0])
    looks = triton.events[:first_load]
    assert looks[:4] == ["busy", "busy", "quiet", "busy"] and set(looks[4:]) == {"quiet"}
    assert time.monotonic() - started >= 0.2  # quiet for the whole window before loading
    assert triton.events[first_load:] == list(ENSEMBLE_NAMES)
    assert triton.at == dict.fromkeys(ENSEMBLE_NAMES, 2)


def test_an_ensemble_that_never_stays_at_the_version_refuses_it(rollout, monkeypatch):
    faked(rollout, monkeypatch, reverts=ENSEMBLE_LOAD_TRIES)
    with pytest.raises(VersionRefused, match="text_classifier not ready at version 2"):
        rollout._load_ensembles(2)


def test_an_ensemble_load_overtaken_by_tritons_own_is_loaded_again(rollout, monkeypatch):
    triton = faked(rollout, monkeypatch, reverts=0, overtakes=2)
    rollout._load_ensembles(2)
    assert triton.at == dict.fromkeys(ENSEMBLE_NAMES, 2)
    assert triton.loads == [*ENSEMBLE_NAMES, "text_classifier", "text_classifier"]


def test_an_ensemble_load_refused_for_another_reason_refuses_the_version(rollout, monkeypatch):
    faked(rollout, monkeypatch, reverts=0, overtakes=1, refusal="model.onnx: protobuf parsing")
    with pytest.raises(VersionRefused, match="protobuf parsing"):
        rollout._load_ensembles(2)
