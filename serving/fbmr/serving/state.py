"""What one running facade holds: its settings, the Triton connection, the exported model's
artifacts, the similar-listing index and the metrics. Built by the app's lifespan, read by the
routes through `fbmr.serving.deps`."""

from __future__ import annotations

from dataclasses import dataclass, field

from fbmr.core.artifacts import ModelArtifacts
from fbmr.serving.errors import unavailable
from fbmr.serving.index import IndexStore
from fbmr.serving.inference import TritonModels
from fbmr.serving.metrics import Metrics
from fbmr.serving.settings import FacadeSettings


@dataclass
class FacadeState:
    settings: FacadeSettings
    models: TritonModels
    index: IndexStore
    metrics: Metrics = field(default_factory=Metrics)
    _artifacts: ModelArtifacts | None = None

    def artifacts(self) -> ModelArtifacts:
        """The exported version's tokeniser, labels and image settings (read once, on first use);
        a 503 while the repository holds no export."""
        if self._artifacts is None:
            try:
                self._artifacts = ModelArtifacts.load(self.settings.model_repository)
            except (FileNotFoundError, ValueError) as err:
                raise unavailable(
                    f"no model artifacts: {err}", self.settings.retry_after_s
                ) from None
        return self._artifacts
