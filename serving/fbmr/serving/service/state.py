"""What one running facade holds: its settings, the Triton connection, the exported model's
artifacts, the similar-listing index and the metrics. Built by the app's lifespan, read by the
routes through `fbmr.serving.http.deps`.

Model versions: every request is pinned to the version whose artifacts (tokeniser, labels, image
settings) the facade holds, so inputs are built for, and outputs read by, the version that ran.
Which version that is, the rollout decides (`fbmr.serving.triton.rollout`): it loads a new
export beside the one in use, checks it, and switches Triton's ensembles to it; the facade then
adopts it in one step. A version the rollout refuses is never adopted. Requests already under way
finish on the version they started with; one that meets the switch waits for it (`swap_wait_s`)
and runs again on the new version rather than failing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from tritonclient.utils import InferenceServerException

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import Kind
from fbmr.serving.index.store import IndexStore
from fbmr.serving.metrics import Metrics
from fbmr.serving.service.admission import Admission
from fbmr.serving.service.errors import Unavailable
from fbmr.serving.settings import FacadeSettings
from fbmr.serving.triton.inference import TritonModels
from fbmr.serving.triton.rollout import Rollout
from fbmr.serving.triton.versions import RolloutStatus

log = logging.getLogger(__name__)


@dataclass
class FacadeState:
    settings: FacadeSettings
    models: TritonModels
    index: IndexStore
    rollout: Rollout
    metrics: Metrics = field(default_factory=Metrics)
    _artifacts: ModelArtifacts | None = None
    _status: RolloutStatus | None = None
    admission: Admission = field(init=False)
    _running: asyncio.Task[None] | None = None
    _wait: asyncio.Lock = field(default_factory=asyncio.Lock)
    # the last /readyz answer: (when, body, status)
    readiness: tuple[float, dict[str, object], int] | None = None

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_in_flight)

    def artifacts(self) -> ModelArtifacts:
        """The artifacts of the model version in use. Before the rollout has reached Triton
        (it is down), the repository's newest: requests are still checked and encoded, and
        Triton's version check sends one built for a version it does not serve back to
        `after_refusal`. Unavailable (a 503) while the repository holds no export."""
        if self._artifacts is None:
            try:
                self._artifacts = ModelArtifacts.load(self.settings.model_repository)
            except (FileNotFoundError, ValueError) as err:
                message = f"no model artifacts: {err}"
                raise Unavailable(message, self.settings.retry_after_s) from None
        return self._artifacts

    @property
    def switching(self) -> bool:
        """A rollout step is under way (requests that meet it wait for it, then go on)."""
        return self._running is not None and not self._running.done()

    @property
    def rollout_status(self) -> RolloutStatus | None:
        """What the rollout served and refused when it last ran."""
        return self._status

    async def converge(self, than: int = 0) -> bool:
        """Let the rollout move Triton to the version to serve, and adopt that version. True
        when the version in use is now newer than `than` (the version a request was built
        for). One rollout step runs at a time, in a thread: callers that come while it runs
        wait for it rather than start another, and one that gives up waiting leaves it running."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._converge_once())
        await asyncio.shield(self._running)
        return (self._artifacts.version if self._artifacts else 0) > than

    async def _converge_once(self) -> None:
        current = self._artifacts.version if self._artifacts else 0
        try:
            status = await asyncio.to_thread(self.rollout.converge)
        except InferenceServerException as err:
            log.debug("rollout not run, Triton unreachable: %s", err)
            return
        self._record(status)
        if status.in_use is not None and status.in_use != current:
            artifacts = await asyncio.to_thread(
                ModelArtifacts.load, self.settings.model_repository, version=status.in_use
            )
            self._artifacts = artifacts  # one assignment: the swap
            self.readiness = None  # /readyz says so at once
            self.metrics.model_version.set(status.in_use)
            log.info("model version %d in use (was %s)", status.in_use, current or "none")

    def _record(self, status: RolloutStatus) -> None:
        before = self._status.refused if self._status else {}
        for version in before.keys() | status.refused.keys():
            self.metrics.refused_versions.labels(str(version)).set(version in status.refused)
        if self._status is None or status.summary() != self._status.summary():
            self.readiness = None
        self._status = status

    async def after_refusal(self, kind: Kind, refused: int) -> ModelArtifacts | None:
        """The artifacts to retry a request with after Triton refused version `refused` of the
        ensemble of `kind`: a newer version once Triton serves all of it (adopted here), or the
        same version once Triton serves it again. Waits up to `swap_wait_s`; None after that.
        One waiting request asks Triton at a time; the others then find its answer at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.swap_wait_s
        try:
            async with asyncio.timeout_at(deadline), self._wait:
                while True:
                    current = self.artifacts()
                    if current.version != refused or await self.converge(than=refused):
                        return self.artifacts()
                    if await self.models.ready(refused, kinds=(kind,)):
                        return current
                    await asyncio.sleep(0.2)
        except TimeoutError:
            return None


async def watch_models(state: FacadeState, every_s: float) -> None:
    """Run the rollout at start and then every `every_s` (0: at start only): a new export is
    checked and adopted, a pin followed, and after a Triton restart the version in use loaded
    again, as `watch_index` picks up a new index."""
    while True:
        try:
            await state.converge()
        except (OSError, ValueError) as err:
            log.warning("model versions not checked: %s", err)
        except Exception:  # the watcher must outlive any one failed step
            log.exception("model versions not checked")
        if every_s <= 0:
            return
        await asyncio.sleep(every_s)
