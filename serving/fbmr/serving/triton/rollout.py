"""Model rollouts that never take the service down: fbmr, not Triton's polling, decides which
exported version Triton loads and serves.

Triton runs with `--model-control-mode=explicit`; `Rollout.converge` drives its repository API:

1. load the new version of every composing model beside the version in use (a config override
   with `version_policy: specific [in use, new]`); a version that fails to load leaves the old
   one loaded and serving, as Triton keeps a model's loaded versions when a reload fails;
2. smoke-test it: one listing through each ensemble's graph, step by step on the new versions of
   the composing models, so nothing the facade calls changes yet; every answer must have the
   configured shape, be finite, and the probabilities must add up to one;
3. only then re-load the ensembles pinned to the new version (the switch itself, instant: an
   ensemble holds no weights), and send the same listing through them;
4. unload the old composing versions once requests that were inside the old ensembles are done.

A version refused at any step is unloaded again, remembered with its cause (and tried again
only when its files change), and the version in use keeps serving. A pin file in the repository
(`fbmr model pin`) holds the service at an earlier or a later version; the same steps move to it.

Loads of an unchanged config are no-ops in Triton, so several drivers on one Triton (facade
workers, replicas, the local supervisor) agree without talking to each other: each follows the
version Triton serves when another driver moved it, and reaches the same verdicts on the same
files. Against a Triton that polls its repository itself, the load API is refused; the rollout
then only follows what Triton serves, as before.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, text_format  # type: ignore[import-untyped]
from numpy.typing import NDArray
from PIL import Image
from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from fbmr.core.artifacts import ModelArtifacts, exported_versions, published_version
from fbmr.core.contract import ENSEMBLE_NAMES, IMAGE, PROBABILITIES, TOKEN_IDS, Datatype
from fbmr.core.fileio import atomic_write_json
from fbmr.serving.triton.admin import admin_client

log = logging.getLogger(__name__)

PIN_FILE = "pinned_version.json"
# Smoke tests in a row that may time out under load before a version is refused for it.
BUSY_TRIES = 3
# Loads of the ensembles before a switch is given up, and how long each is left to settle (the
# re-loads Triton makes of its own land within a few hundred ms).
ENSEMBLE_LOAD_TRIES = 4
ENSEMBLE_SETTLE_S = 0.5
# The longest wait for Triton's own loads and unloads to end before the ensembles are loaded,
# and how long nothing must be loading or unloading to count as ended (Triton's own re-loads of
# an ensemble start a moment after the load of a model it composes returns).
LIFECYCLE_QUIET_S = 10.0
QUIET_WINDOW_S = 0.3
_IN_MOTION = frozenset({"LOADING", "UNLOADING"})
# Triton's refusal of a load that one of its own re-loads overtook (not a fault of the version)
_OVERTAKEN = "current load operation is out-dated"
# Triton's answers that say "not now" rather than "wrong"
_BUSY_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
# What the smoke test sends through every ensemble: a listing as a seller would post it.
SMOKE_TEXT = "Oak dining table with four chairs, good condition, collection only | in Leeds"


class VersionRefused(RuntimeError):
    """A model version failed to load or failed its smoke test; the message says why."""


class VersionBusy(VersionRefused):
    """The smoke test got no answer in time (Triton's queue full or its deadline passed): a
    busy machine, not yet a fault of the version; refused after BUSY_TRIES of these."""


class VersionNotThere(RuntimeError):
    """Triton's repository does not hold the version yet (its copy of the repository is synced
    apart from the facade's, as in Kubernetes): tried again later, not refused."""


def read_pin(repository: Path) -> int | None:
    """The version the repository's pin file holds the service at; None: follow the newest."""
    try:
        return int(json.loads((Path(repository) / PIN_FILE).read_text())["version"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s ignored: %s", Path(repository) / PIN_FILE, err)
        return None


def write_pin(repository: Path, version: int | None) -> None:
    """Hold the service at `version` (None: follow the newest export again)."""
    path = Path(repository) / PIN_FILE
    if version is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, {"version": version})


def smoke_photo() -> bytes:
    """A photo for the smoke test: a wooden-brown gradient, as a JPEG the way sellers send them."""
    across, down = np.meshgrid(np.linspace(0, 1, 160), np.linspace(0, 1, 120))
    pixels = np.stack([120 + 100 * across * down, 70 + 60 * across, 30 + 20 * down], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass
class RolloutStatus:
    """What a rollout serves and what it refused, as `/readyz` and the metrics report it."""

    in_use: int | None
    pinned: int | None
    refused: dict[int, str]
    removed: bool = False  # the version in use is no longer in the repository (still served)
    explicit: bool = True  # fbmr drives Triton's loading (False: Triton polls by itself)

    def summary(self) -> str:
        parts = [f"serving version {self.in_use}" if self.in_use else "serving no version"]
        if self.removed:
            parts[0] += " (removed from the repository; still loaded)"
        if self.pinned is not None:
            parts.append(f"pinned to version {self.pinned}")
        parts += [f"version {v} refused: {reason}" for v, reason in sorted(self.refused.items())]
        if not self.explicit:
            parts.append("Triton loads versions by itself (poll mode)")
        return "; ".join(parts)


def served_version(client: InferenceServerClient, prefer: int | None = None) -> int | None:
    """The version at which the Triton behind `client` serves every ensemble; None when it
    serves none (raises InferenceServerException when it cannot be reached). Just after a
    switch the old ensembles may still be listed ready while Triton unloads them: `prefer` (the
    version switched to) wins then, else the newest."""
    ready: dict[str, set[int]] = {name: set() for name in ENSEMBLE_NAMES}
    for model in client.get_model_repository_index(as_json=True).get("models", []):
        if model.get("name") in ready and model.get("state") == "READY":
            ready[model["name"]].add(int(model["version"]))
    common = set.intersection(*ready.values())
    if prefer in common:
        return prefer
    return max(common) if common else None


def _fingerprint(repository: Path, version: int) -> tuple[int, int]:
    """Changes when any file of `version` changes: a refused version is tried again then."""
    files = [p for p in Path(repository).glob(f"*/{version}/**/*") if p.is_file()]
    return len(files), max((p.stat().st_mtime_ns for p in files), default=0)


def _read_config(repository: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse(
        (Path(repository) / name / "config.pbtxt").read_text(), mc.ModelConfig()
    )


def _datatype(value: int) -> str:
    return Datatype.of_config(str(mc.DataType.Name(value)))


@dataclass
class _Refusals:
    causes: dict[int, tuple[tuple[int, int], str]] = field(default_factory=dict)

    def holds(self, repository: Path, version: int) -> bool:
        entry = self.causes.get(version)
        return entry is not None and entry[0] == _fingerprint(repository, version)

    def add(self, repository: Path, version: int, reason: str) -> None:
        self.causes[version] = (_fingerprint(repository, version), reason)

    def current(self, repository: Path) -> dict[int, str]:
        return {v: r for v, (_, r) in self.causes.items() if self.holds(repository, v)}


class Rollout:
    """The version of the exported models that one Triton serves, moved only to versions that
    load and answer. Thread-safe; `converge` blocks (run it in a thread from async code)."""

    def __init__(
        self,
        repository: Path,
        url: str,
        load_timeout_s: float = 600.0,
        drain_s: float = 10.0,
        admin_key: str | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.load_timeout_s = load_timeout_s
        self.drain_s = drain_s  # the longest request still inside the old ensembles
        # `admin_key`: what Triton's restricted repository API expects (`triton_admin`)
        self.client = admin_client(InferenceServerClient(url), admin_key)
        self.in_use: int | None = None
        self.explicit = True
        self._refusals = _Refusals()
        self._trim_at: float | None = None
        self._missing_pin: int | None = None
        self._busy: dict[int, int] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def versions(self) -> list[int]:
        """The exported versions whose publication finished (a version still being moved in
        by `fbmr export` is left until its manifest is written)."""
        published = published_version(self.repository)
        versions = exported_versions(self.repository)
        return versions if published is None else [v for v in versions if v <= published]

    def status(self) -> RolloutStatus:
        versions = self.versions()
        return RolloutStatus(
            self.in_use,
            read_pin(self.repository),
            self._refusals.current(self.repository),
            removed=self.in_use is not None and self.in_use not in versions,
            explicit=self.explicit,
        )

    # --- what Triton serves -------------------------------------------------------------

    def _composing(self) -> list[str]:
        names: list[str] = []
        for ensemble in ENSEMBLE_NAMES:
            for step in _read_config(self.repository, ensemble).ensemble_scheduling.step:
                if step.model_name not in names:
                    names.append(step.model_name)
        return names

    def served(self) -> int | None:
        """The version at which Triton serves every ensemble (raises when unreachable)."""
        return served_version(self.client, prefer=self.in_use)

    # --- loading ------------------------------------------------------------------------

    def _load(self, name: str, versions: Iterable[int], pin: int | None = None) -> None:
        config = _read_config(self.repository, name)
        config.version_policy.Clear()
        config.version_policy.specific.versions.extend(sorted(set(versions)))
        if pin is not None:  # an ensemble: every step on the composing models' version `pin`
            for step in config.ensemble_scheduling.step:
                step.model_version = pin
        try:
            self.client.load_model(
                name, config=json_format.MessageToJson(config), client_timeout=self.load_timeout_s
            )
        except InferenceServerException as err:
            message = err.message() or str(err)
            if "not allowed" in message:  # Triton polls its repository itself
                self.explicit = False
            raise VersionRefused(_short(message)) from None

    def _load_all(self, loads: list[tuple[str, list[int], int | None]]) -> None:
        """Models loaded side by side (Triton loads in parallel threads); the first failure."""
        with ThreadPoolExecutor(max(1, len(loads))) as pool:
            futures = [pool.submit(self._load, *load) for load in loads]
            errors = [f.exception() for f in futures]
        if failed := next((e for e in errors if e is not None), None):
            raise failed

    def _load_ensembles(self, version: int) -> None:
        """Every ensemble pinned to `version`, checked to have stayed there. Triton re-loads an
        ensemble by itself, with the config it had, whenever a model it composes is loaded, and
        that re-load can land after ours and put the ensemble back on the old version (seen
        under load, a second after the composing models' load returned); such an ensemble is
        loaded again, as is one whose load Triton dropped for its own."""
        stale = list(ENSEMBLE_NAMES)
        for _ in range(ENSEMBLE_LOAD_TRIES):
            # One at a time, and once Triton's own loads and unloads have ended: tritonserver
            # 2.51 died of SIGSEGV in its model lifecycle with our three ensemble loads landing
            # beside its own re-loads of them (seen once under load, in a rollback).
            self._wait_for_quiet_lifecycle()
            for name in stale:
                try:
                    self._load(name, [version], version)
                except VersionRefused as err:
                    # that re-load can also start while ours runs, and Triton then drops ours
                    # as out-dated (seen under load): what matters is where they end up
                    if _OVERTAKEN not in str(err):
                        raise
                    log.info("a load by Triton itself overtook ours: %s", err)
            time.sleep(ENSEMBLE_SETTLE_S)
            stale = [n for n in ENSEMBLE_NAMES if not self.client.is_model_ready(n, str(version))]
            if not stale:
                return
            log.info("%s put back on another version by Triton; loading again", ", ".join(stale))
        raise VersionRefused(f"{', '.join(stale)} not ready at version {version}")

    def _wait_for_quiet_lifecycle(self) -> None:
        """Until no model of the repository has been loading or unloading for QUIET_WINDOW_S,
        LIFECYCLE_QUIET_S at most (then the loads go ahead: a Triton that stays busy, or does not
        answer the question, still gets them, and their own errors say what is wrong)."""
        now = time.monotonic()
        deadline, quiet_since = now + LIFECYCLE_QUIET_S, None
        while (now := time.monotonic()) < deadline:
            try:
                index = self.client.get_model_repository_index(
                    as_json=True, client_timeout=LIFECYCLE_QUIET_S
                ).get("models", [])
                moving = any(model.get("state") in _IN_MOTION for model in index)
            except InferenceServerException:
                moving = True
            if moving:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= QUIET_WINDOW_S:
                return
            time.sleep(0.05)

    def _restore(self, composing: list[str], keep: int | None) -> None:
        """Back to `keep` alone: the refused version unloaded, or everything when none served."""
        try:
            if keep is None:
                for name in [*ENSEMBLE_NAMES, *composing]:
                    self.client.unload_model(name)
            else:
                self._load_all([(n, [keep], None) for n in composing])
                self._load_ensembles(keep)
        except (InferenceServerException, VersionRefused) as err:
            log.warning("after a refused version, version %s not restored: %s", keep, err)

    # --- the smoke test -----------------------------------------------------------------

    def _smoke_inputs(self, version: int) -> dict[str, NDArray[Any]]:
        artifacts = ModelArtifacts.load(self.repository, version=version)
        return {
            IMAGE: artifacts.image_input(smoke_photo())[None],
            TOKEN_IDS: artifacts.text_input(SMOKE_TEXT)[None],
        }

    def _infer(
        self,
        name: str,
        version: int,
        inputs: dict[str, NDArray[Any]],
        wanted: list[str],
        datatypes: dict[str, str],
        tries: int = 1,
    ) -> dict[str, NDArray[Any]]:
        """`wanted` outputs of model `name` at `version`; a model "not at ready state" is asked
        again after ENSEMBLE_SETTLE_S, `tries` times in all, before the version is refused."""
        tensors = []
        for key, array in inputs.items():
            tensor = InferInput(key, list(array.shape), datatypes[key])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        for attempt in range(1, tries + 1):
            try:
                result = self.client.infer(
                    name,
                    tensors,
                    model_version=str(version),
                    outputs=[InferRequestedOutput(w) for w in wanted],
                    client_timeout=60.0,
                )
                return {w: result.as_numpy(w) for w in wanted}
            except InferenceServerException as err:
                message = f"{name}: {_short(err.message() or str(err))}"
                not_ready = "ready state" in message
                if not_ready and attempt < tries:
                    time.sleep(ENSEMBLE_SETTLE_S)
                    continue
                busy = err.status() in _BUSY_STATUSES and not not_ready
                raise (VersionBusy if busy else VersionRefused)(message) from None
        raise AssertionError("unreachable: the last try returns or raises")

    def _check(self, ensemble: mc.ModelConfig, answers: dict[str, NDArray[Any]]) -> None:
        for output in ensemble.output:
            array = answers.get(output.name)
            expected = (1, *output.dims)
            if array is None or tuple(array.shape) != expected:
                shape = None if array is None else tuple(array.shape)
                raise VersionRefused(
                    f"{ensemble.name}: {output.name} of shape {shape}, not {expected}"
                )
            if not np.isfinite(array).all():
                raise VersionRefused(f"{ensemble.name}: {output.name} not finite")
        total = float(answers[PROBABILITIES].sum())
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise VersionRefused(f"{ensemble.name}: probabilities add up to {total:.4f}, not 1")

    def _smoke(self, version: int, step_by_step: bool) -> None:
        """One listing through each ensemble at `version`: step by step on the composing models
        (before the switch, so nothing the facade calls changes), or through the ensembles
        themselves (after it)."""
        inputs = self._smoke_inputs(version)
        for name in ENSEMBLE_NAMES:
            ensemble = _read_config(self.repository, name)
            tensors = {i.name: inputs[i.name] for i in ensemble.input}
            datatypes = {i.name: _datatype(i.data_type) for i in ensemble.input}
            if step_by_step:
                self._run_steps(ensemble, version, tensors, datatypes)
            else:
                wanted = [o.name for o in ensemble.output]
                # a just-switched ensemble that Triton is still re-loading answers "not at ready
                # state" for a moment (on a loaded machine, right after a restart): asked again
                # after ENSEMBLE_SETTLE_S, up to ENSEMBLE_LOAD_TRIES times; its composing models
                # already answered step by step
                answers = self._infer(
                    name, version, tensors, wanted, datatypes, ENSEMBLE_LOAD_TRIES
                )
                tensors.update(answers)
            self._check(ensemble, tensors)

    def _run_steps(
        self,
        ensemble: mc.ModelConfig,
        version: int,
        tensors: dict[str, NDArray[Any]],
        datatypes: dict[str, str],
    ) -> None:
        """What Triton's ensemble scheduler does, on the composing models at `version`: each
        step once its inputs are there; its outputs added to `tensors`."""
        steps = list(ensemble.ensemble_scheduling.step)
        while steps:
            step = next((s for s in steps if set(s.input_map.values()) <= tensors.keys()), None)
            if step is None:
                raise VersionRefused(f"{ensemble.name}: steps whose inputs nothing produces")
            steps.remove(step)
            for tensor in _read_config(self.repository, step.model_name).output:
                produced = step.output_map.get(tensor.name, tensor.name)
                datatypes[produced] = _datatype(tensor.data_type)
            feed = {key: tensors[value] for key, value in step.input_map.items()}
            types = {key: datatypes[value] for key, value in step.input_map.items()}
            out = self._infer(step.model_name, version, feed, list(step.output_map), types)
            tensors.update({step.output_map[k]: v for k, v in out.items()})

    # --- the rollout --------------------------------------------------------------------

    def _switch(self, version: int, loaded: int | None) -> None:
        """Serve `version` instead of `loaded` (None: nothing served), or raise VersionRefused
        with everything back as it was."""
        composing = self._composing()
        keep = [loaded] if loaded is not None else []
        started = time.monotonic()
        try:
            self._load_all([(n, [*keep, version], None) for n in composing])
            # Triton loads the versions it finds: one whose files its repository lacks is
            # skipped without an error
            if absent := [n for n in composing if not self.client.is_model_ready(n, str(version))]:
                self._restore(composing, loaded)
                raise VersionNotThere(f"{', '.join(absent)} not in Triton's repository yet")
            self._smoke(version, step_by_step=True)
            # only a version whose every step answered reaches the ensembles
            self._load_ensembles(version)
            self._smoke(version, step_by_step=False)
        except (VersionRefused, OSError, ValueError) as err:
            self._restore(composing, loaded)
            raise err if isinstance(err, VersionRefused) else VersionRefused(str(err)) from None
        self.in_use = version
        self._trim_at = time.monotonic() + self.drain_s if loaded is not None else None
        log.info(
            "model version %d in use (was %s), checked and switched in %.1f s",
            version,
            loaded or "none",
            time.monotonic() - started,
        )

    def _candidates(self, versions: list[int], pinned: int | None, loaded: int | None) -> list[int]:
        good = [v for v in reversed(versions) if not self._refusals.holds(self.repository, v)]
        if pinned is not None and pinned in versions:
            return [] if pinned == loaded else [v for v in good if v == pinned]
        if pinned is not None and pinned != self._missing_pin:  # said once, not every step
            log.warning("pinned version %d is not in the repository; following the newest", pinned)
        self._missing_pin = pinned
        if loaded is not None:
            return [v for v in good if v > loaded]
        return good  # nothing served (a fresh or restarted Triton): the newest that loads

    def converge(self) -> RolloutStatus:
        """Move Triton to the version it should serve (the pinned one, else the newest export
        that loads and answers) if it is not there; a no-op when it is. Raises
        InferenceServerException while Triton cannot be reached."""
        with self._lock:
            versions = self.versions()
            served = self.served()
            if served is not None and self.in_use not in (None, served):
                log.info("Triton serves version %d (moved by another driver)", served)
            self.in_use = served  # None after a Triton restart, until a version is loaded
            if self.explicit:
                self._converge(versions, served)
            return self.status()

    def _converge(self, versions: list[int], served: int | None) -> None:
        for version in self._candidates(versions, read_pin(self.repository), served):
            try:
                self._switch(version, served)
                return
            except VersionNotThere as err:
                log.info("model version %d not loaded yet: %s", version, err)
                continue
            except VersionBusy as err:
                self._busy[version] = self._busy.get(version, 0) + 1
                if self._busy[version] < BUSY_TRIES:
                    log.warning("model version %d not checked, Triton busy: %s", version, err)
                    return  # the next step tries again; the version in use serves meanwhile
                self._refuse(version, served, err)
            except VersionRefused as err:
                if not self.explicit:
                    log.info("Triton polls its repository; following the version it serves")
                    return
                self._refuse(version, served, err)
        if self._trim_at is not None and time.monotonic() >= self._trim_at and served is not None:
            try:  # the old composing versions, now that no request can be inside them
                self._load_all([(n, [served], None) for n in self._composing()])
                self._trim_at = None
            except VersionRefused as err:
                log.warning("old model versions not unloaded yet: %s", err)

    def _refuse(self, version: int, served: int | None, err: Exception) -> None:
        self._refusals.add(self.repository, version, str(err))
        self._busy.pop(version, None)
        serving = f"serving version {served}" if served else "no version served"
        log.error("model version %d refused: %s; %s", version, err, serving)


def _short(message: str, limit: int = 300) -> str:
    """Triton's message without the Python traceback it appends (the cause is its first line)."""
    first = message.split("\n\nAt:")[0].strip()
    return first if len(first) <= limit else first[: limit - 3] + "..."
