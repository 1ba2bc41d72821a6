"""Model rollouts that never take the service down: fbmr, not Triton's polling, decides which
exported version Triton loads and serves.

Triton runs with `--model-control-mode=explicit`; `Rollout.converge` drives its repository API:

1. load the new version of every composing model beside the version in use (a config override
   with `version_policy: specific [in use, new]`); a version that fails to load leaves the old
   one loaded and serving, as Triton keeps a model's loaded versions when a reload fails;
2. smoke-test it (`fbmr.serving.triton.smoke`): one listing through each ensemble's graph, step
   by step on the new versions of the composing models, so nothing the facade calls changes yet;
   every answer must have the configured shape, be finite, and the probabilities add up to one;
3. only then re-load the ensembles pinned to the new version (the switch itself, instant: an
   ensemble holds no weights), and send the same listing through them;
4. unload the old composing versions once requests that were inside the old ensembles are done.

A version refused at any step is unloaded again, remembered with its cause (and tried again
only when its files change), and the version in use keeps serving. A pin file in the repository
(`fbmr model pin`, `fbmr.serving.triton.versions`) holds the service at an earlier or a later
version; the same steps move to it.

Loads of an unchanged config are no-ops in Triton, so several drivers on one Triton (facade
workers, replicas, the local supervisor) agree without talking to each other: each follows the
version Triton serves when another driver moved it, and reaches the same verdicts on the same
files. Against a Triton that polls its repository itself, the load API is refused; the rollout
then only follows what Triton serves, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import json_format  # type: ignore[import-untyped]
from tritonclient.grpc import InferenceServerClient
from tritonclient.utils import InferenceServerException

from fbmr.core.artifacts import exported_versions, published_version
from fbmr.core.contract import ENSEMBLE_NAMES
from fbmr.serving.triton.smoke import ENSEMBLE_LOAD_TRIES, ENSEMBLE_SETTLE_S, SmokeTest
from fbmr.serving.triton.versions import (
    Refusals,
    RolloutStatus,
    VersionBusy,
    VersionNotThere,
    VersionRefused,
    composing_models,
    read_config,
    read_pin,
    served_version,
    short_message,
)

log = logging.getLogger(__name__)

# Smoke tests in a row that may time out under load before a version is refused for it.
BUSY_TRIES = 3
# The longest wait for Triton's own loads and unloads to end before the ensembles are loaded,
# and how long nothing must be loading or unloading to count as ended (Triton's own re-loads of
# an ensemble start a moment after the load of a model it composes returns).
LIFECYCLE_QUIET_S = 10.0
QUIET_WINDOW_S = 0.3
_IN_MOTION = frozenset({"LOADING", "UNLOADING"})
# Triton's refusal of a load that one of its own re-loads overtook (not a fault of the version)
_OVERTAKEN = "current load operation is out-dated"


class Rollout:
    """The version of the exported models that one Triton serves, moved only to versions that
    load and answer. Thread-safe; `converge` blocks (run it in a thread from async code)."""

    def __init__(
        self,
        repository: Path,
        client: InferenceServerClient,
        load_timeout_s: float = 600.0,
        drain_s: float = 10.0,
    ) -> None:
        """`client`: of the Triton to drive, sending what its restricted repository API expects
        (`fbmr.serving.triton.admin.admin_client`); the rollout's from here on (`close` closes
        it)."""
        self.repository = Path(repository)
        self.client = client
        self.load_timeout_s = load_timeout_s
        self.drain_s = drain_s  # the longest request still inside the old ensembles
        self._smoke = SmokeTest(client, self.repository)
        self.in_use: int | None = None
        self.explicit = True
        self._refusals = Refusals()
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

    def served(self) -> int | None:
        """The version at which Triton serves every ensemble (raises when unreachable)."""
        return served_version(self.client, prefer=self.in_use)

    # --- loading ------------------------------------------------------------------------

    def _load(self, name: str, versions: Iterable[int], pin: int | None = None) -> None:
        config = read_config(self.repository, name)
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
            raise VersionRefused(short_message(message)) from None

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

    # --- the rollout --------------------------------------------------------------------

    def _switch(self, version: int, loaded: int | None) -> None:
        """Serve `version` instead of `loaded` (None: nothing served), or raise VersionRefused
        with everything back as it was."""
        composing = composing_models(self.repository)
        keep = [loaded] if loaded is not None else []
        started = time.monotonic()
        try:
            self._load_all([(n, [*keep, version], None) for n in composing])
            # Triton loads the versions it finds: one whose files its repository lacks is
            # skipped without an error
            if absent := [n for n in composing if not self.client.is_model_ready(n, str(version))]:
                self._restore(composing, loaded)
                raise VersionNotThere(f"{', '.join(absent)} not in Triton's repository yet")
            self._smoke.run(version, step_by_step=True)
            # only a version whose every step answered reaches the ensembles
            self._load_ensembles(version)
            self._smoke.run(version, step_by_step=False)
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
                self._load_all([(n, [served], None) for n in composing_models(self.repository)])
                self._trim_at = None
            except VersionRefused as err:
                log.warning("old model versions not unloaded yet: %s", err)

    def _refuse(self, version: int, served: int | None, err: Exception) -> None:
        self._refusals.add(self.repository, version, str(err))
        self._busy.pop(version, None)
        serving = f"serving version {served}" if served else "no version served"
        log.error("model version %d refused: %s; %s", version, err, serving)
