"""What one running facade holds: its settings, the Triton connection, the exported model's
artifacts, the similar-listing index and the metrics. Built by the app's lifespan, read by the
routes through `fbmr.serving.deps`.

Model versions: every request is pinned to the version whose artifacts (tokeniser, labels, image
settings) the facade holds, so inputs are built for, and outputs read by, the version that ran.
A newer export is adopted in one step once Triton reports all its ensembles ready at that
version; requests already under way finish on the version they started with.

While Triton swaps versions it reports the ensembles not ready (it reloads their composing models,
the old version among them): for a second on an idle machine, several under load. A request that
meets that window waits for the swap to end (`swap_wait_s`) rather than failing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from fbmr.core.artifacts import ModelArtifacts, exported_versions
from fbmr.core.contract import Kind
from fbmr.serving.admission import Admission
from fbmr.serving.errors import unavailable
from fbmr.serving.index import IndexStore
from fbmr.serving.inference import TritonModels
from fbmr.serving.metrics import Metrics
from fbmr.serving.settings import FacadeSettings

log = logging.getLogger(__name__)


@dataclass
class FacadeState:
    settings: FacadeSettings
    models: TritonModels
    index: IndexStore
    metrics: Metrics = field(default_factory=Metrics)
    _artifacts: ModelArtifacts | None = None
    admission: Admission = field(init=False)
    _swap: asyncio.Lock = field(default_factory=asyncio.Lock)
    _wait: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_in_flight)

    def artifacts(self) -> ModelArtifacts:
        """The artifacts of the model version in use: on first use the repository's latest; a
        503 while the repository holds no export."""
        if self._artifacts is None:
            try:
                self._artifacts = ModelArtifacts.load(self.settings.model_repository)
            except (FileNotFoundError, ValueError) as err:
                message = f"no model artifacts: {err}"
                raise unavailable(message, self.settings.retry_after_s) from None
        return self._artifacts

    async def adopt_newer_version(self, than: int = 0) -> bool:
        """Switch to the repository's newest export if it is newer than the one in use and
        Triton serves it. True when the version in use is now newer than `than` (the version a
        request was built for): swapped here, or by a request that met the swap first."""
        async with self._swap:  # one check at a time; requests keep reading the old meanwhile
            versions = exported_versions(self.settings.model_repository)
            current = self._artifacts.version if self._artifacts else 0
            if not versions or versions[-1] <= current:
                return current > than
            newest = versions[-1]
            if not await self.models.ready(newest):
                return False
            artifacts = ModelArtifacts.load(self.settings.model_repository, version=newest)
            self._artifacts = artifacts  # one assignment: the swap
            log.info("model version %d in use (was %s)", newest, current or "none")
            return True

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
                    if current.version != refused or await self.adopt_newer_version(than=refused):
                        return self.artifacts()
                    if await self.models.ready(refused, kinds=(kind,)):
                        return current
                    await asyncio.sleep(0.2)
        except TimeoutError:
            return None


async def watch_models(state: FacadeState, every_s: float) -> None:
    """Adopt a new export once Triton serves it, as `watch_index` picks up a new index."""
    if every_s <= 0:
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await state.adopt_newer_version()
        except (OSError, ValueError) as err:
            log.warning("model version not checked: %s", err)
