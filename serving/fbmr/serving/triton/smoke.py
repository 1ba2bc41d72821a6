"""The smoke test a model version passes before the service switches to it: one listing, as a
seller would post it, through each ensemble of the version, step by step on its composing models
(before the switch, so nothing the facade calls changes; this emulates Triton's ensemble
scheduler) or through the ensembles themselves (after it). Every answer must have the configured
shape and be finite, and the probabilities must add up to one; anything else refuses the version
(`VersionRefused`), and an answer that did not come in time says the machine is busy
(`VersionBusy`), not yet that the version is at fault."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format  # type: ignore[import-untyped]
from numpy.typing import NDArray
from PIL import Image
from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ENSEMBLE_NAMES, IMAGE, PROBABILITIES, TOKEN_IDS, Datatype

# Triton's answers that say "not now" rather than "wrong"
_BUSY_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
# What the smoke test sends through every ensemble: a listing as a seller would post it.
SMOKE_TEXT = "Oak dining table with four chairs, good condition, collection only | in Leeds"


class VersionRefused(RuntimeError):
    """A model version failed to load or failed its smoke test; the message says why."""


class VersionBusy(VersionRefused):
    """The smoke test got no answer in time (Triton's queue full or its deadline passed): a
    busy machine, not yet a fault of the version; refused after BUSY_TRIES of these."""


def smoke_photo() -> bytes:
    """A photo for the smoke test: a wooden-brown gradient, as a JPEG the way sellers send them."""
    across, down = np.meshgrid(np.linspace(0, 1, 160), np.linspace(0, 1, 120))
    pixels = np.stack([120 + 100 * across * down, 70 + 60 * across, 30 + 20 * down], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def read_config(repository: Path, name: str) -> mc.ModelConfig:
    """A model's config.pbtxt in the repository, as Triton reads it."""
    return text_format.Parse(
        (Path(repository) / name / "config.pbtxt").read_text(), mc.ModelConfig()
    )


def _datatype(value: int) -> str:
    return Datatype.of_config(str(mc.DataType.Name(value)))


class SmokeTest:
    """The smoke test of versions in `repository`, through the Triton behind `client`."""

    def __init__(self, client: InferenceServerClient, repository: Path) -> None:
        self.client = client
        self.repository = repository

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
    ) -> dict[str, NDArray[Any]]:
        tensors = []
        for key, array in inputs.items():
            tensor = InferInput(key, list(array.shape), datatypes[key])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            result = self.client.infer(
                name,
                tensors,
                model_version=str(version),
                outputs=[InferRequestedOutput(w) for w in wanted],
                client_timeout=60.0,
            )
        except InferenceServerException as err:
            message = f"{name}: {short(err.message() or str(err))}"
            busy = err.status() in _BUSY_STATUSES and "ready state" not in message
            raise (VersionBusy if busy else VersionRefused)(message) from None
        return {w: result.as_numpy(w) for w in wanted}

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

    def run(self, version: int, step_by_step: bool) -> None:
        """One listing through each ensemble at `version`: step by step on the composing models
        (before the switch, so nothing the facade calls changes), or through the ensembles
        themselves (after it)."""
        inputs = self._smoke_inputs(version)
        for name in ENSEMBLE_NAMES:
            ensemble = read_config(self.repository, name)
            tensors = {i.name: inputs[i.name] for i in ensemble.input}
            datatypes = {i.name: _datatype(i.data_type) for i in ensemble.input}
            if step_by_step:
                self._run_steps(ensemble, version, tensors, datatypes)
            else:
                wanted = [o.name for o in ensemble.output]
                tensors.update(self._infer(name, version, tensors, wanted, datatypes))
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
            for tensor in read_config(self.repository, step.model_name).output:
                produced = step.output_map.get(tensor.name, tensor.name)
                datatypes[produced] = _datatype(tensor.data_type)
            feed = {key: tensors[value] for key, value in step.input_map.items()}
            types = {key: datatypes[value] for key, value in step.input_map.items()}
            out = self._infer(step.model_name, version, feed, list(step.output_map), types)
            tensors.update({step.output_map[k]: v for k, v in out.items()})


def short(message: str, limit: int = 300) -> str:
    """Triton's message without the Python traceback it appends (the cause is its first line)."""
    first = message.split("\n\nAt:")[0].strip()
    return first if len(first) <= limit else first[: limit - 3] + "..."
