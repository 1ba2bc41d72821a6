"""The smoke test a new model version passes before it serves: one listing (`SMOKE_TEXT` and
`smoke_photo`) through each ensemble, step by step on the composing models at that version
(before the switch, so nothing the facade calls changes) or through the ensembles themselves
(after it). Every answer must have its configured shape and be finite, and the probabilities
must add up to one; a version that fails is refused (`VersionRefused`), one that Triton was too
busy to answer is `VersionBusy`."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import ENSEMBLE_NAMES, IMAGE, PROBABILITIES, TOKEN_IDS
from fbmr.serving.triton.versions import (
    VersionBusy,
    VersionRefused,
    datatype,
    read_config,
    short_message,
)

# Loads of the ensembles before a switch is given up, and how long each is left to settle (the
# re-loads Triton makes of its own land within a few hundred ms).
ENSEMBLE_LOAD_TRIES = 4
ENSEMBLE_SETTLE_S = 0.5
# Triton's answers that say "not now" rather than "wrong"
_BUSY_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
# What the smoke test sends through every ensemble: a listing as a seller would post it.
SMOKE_TEXT = "Oak dining table with four chairs, good condition, collection only | in Leeds"


def smoke_photo() -> bytes:
    """A photo for the smoke test: a wooden-brown gradient, as a JPEG the way sellers send them."""
    across, down = np.meshgrid(np.linspace(0, 1, 160), np.linspace(0, 1, 120))
    pixels = np.stack([120 + 100 * across * down, 70 + 60 * across, 30 + 20 * down], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


class SmokeTest:
    """The smoke test of the versions in `repository`, sent to the Triton behind `client`."""

    def __init__(self, client: InferenceServerClient, repository: Path) -> None:
        self.client = client
        self.repository = Path(repository)

    def _inputs(self, version: int) -> dict[str, NDArray[Any]]:
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
                message = f"{name}: {short_message(err.message() or str(err))}"
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

    def run(self, version: int, step_by_step: bool) -> None:
        """One listing through each ensemble at `version`: step by step on the composing models
        (before the switch, so nothing the facade calls changes), or through the ensembles
        themselves (after it)."""
        inputs = self._inputs(version)
        for name in ENSEMBLE_NAMES:
            ensemble = read_config(self.repository, name)
            tensors = {i.name: inputs[i.name] for i in ensemble.input}
            datatypes = {i.name: datatype(i.data_type) for i in ensemble.input}
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
            for tensor in read_config(self.repository, step.model_name).output:
                produced = step.output_map.get(tensor.name, tensor.name)
                datatypes[produced] = datatype(tensor.data_type)
            feed = {key: tensors[value] for key, value in step.input_map.items()}
            types = {key: datatypes[value] for key, value in step.input_map.items()}
            out = self._infer(step.model_name, version, feed, list(step.output_map), types)
            tensors.update({step.output_map[k]: v for k, v in out.items()})
