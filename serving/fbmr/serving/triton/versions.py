"""What a model version is to a rollout: the pin file that holds the service at one
(`fbmr model pin`), the version Triton serves, the status `/readyz` reports, why a version is
refused, and the repository's model configs as Triton reads them. Shared by the rollout
(`fbmr.serving.triton.rollout`), its smoke test (`fbmr.serving.triton.smoke`), the facade's
routes and the CLI."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import InferenceServerClient
from tritonclient.grpc import model_config_pb2 as mc

from fbmr.core.contract import ENSEMBLE_NAMES, Datatype
from fbmr.core.fileio import atomic_write_json

log = logging.getLogger(__name__)

PIN_FILE = "pinned_version.json"


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


def read_config(repository: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse(
        (Path(repository) / name / "config.pbtxt").read_text(), mc.ModelConfig()
    )


def composing_models(repository: Path) -> list[str]:
    """The models the ensembles compose, each once, in the order their steps name them."""
    names: list[str] = []
    for ensemble in ENSEMBLE_NAMES:
        for step in read_config(repository, ensemble).ensemble_scheduling.step:
            if step.model_name not in names:
                names.append(step.model_name)
    return names


def datatype(value: int) -> str:
    return Datatype.of_config(str(mc.DataType.Name(value)))


def short_message(message: str, limit: int = 300) -> str:
    """Triton's message without the Python traceback it appends (the cause is its first line)."""
    first = message.split("\n\nAt:")[0].strip()
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _fingerprint(repository: Path, version: int) -> tuple[int, int]:
    """Changes when any file of `version` changes: a refused version is tried again then."""
    files = [p for p in Path(repository).glob(f"*/{version}/**/*") if p.is_file()]
    return len(files), max((p.stat().st_mtime_ns for p in files), default=0)


@dataclass
class Refusals:
    """The versions refused, with why; a version counts as refused until its files change."""

    causes: dict[int, tuple[tuple[int, int], str]] = field(default_factory=dict)

    def holds(self, repository: Path, version: int) -> bool:
        entry = self.causes.get(version)
        return entry is not None and entry[0] == _fingerprint(repository, version)

    def add(self, repository: Path, version: int, reason: str) -> None:
        self.causes[version] = (_fingerprint(repository, version), reason)

    def current(self, repository: Path) -> dict[int, str]:
        return {v: r for v, (_, r) in self.causes.items() if self.holds(repository, v)}
