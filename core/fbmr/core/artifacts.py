"""The artifacts an exported model version carries beside its ensembles: the tokeniser, label map
and image settings that turn a listing into the tensors those models expect, and a manifest
(`fbmr.json`, `ModelVersionSpec`: read and written here only) that names them and records how the
version was made (the run, the precision, parity and the toolchain that wrote the files).

`fbmr export` writes them into each ensemble's version directory of the Triton model repository;
the facade, the index builder, the client and the benchmarks read the latest version's, and build
model inputs through `ModelArtifacts.image_input` and `text_input`: the one place a listing's photo
and text become the tensors the served models take.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import ARTIFACTS_ENSEMBLE, DEFAULT_MAX_PIXELS
from fbmr.core.decode import ImageSource, PixelBudget
from fbmr.core.fileio import atomic_write_json
from fbmr.core.image import ImageSpec, image_pixels
from fbmr.core.labels import LabelMap
from fbmr.core.schema import checked, stamped
from fbmr.core.text import Tokenizer

ARTIFACTS_FILE = "fbmr.json"
ARTIFACTS_FORMAT = "fbmr.model_version"
ARTIFACTS_TOKENIZER = "tokenizer.json"
ARTIFACTS_LABELS = "labels.json"
# Written by the export last, after every model of a new version is in place.
REPOSITORY_MANIFEST = "repository.json"


def published_version(repository: Path) -> int | None:
    """The newest version the export finished publishing (its manifest); None without one."""
    try:
        return int(json.loads((Path(repository) / REPOSITORY_MANIFEST).read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def exported_versions(repository: Path, ensemble: str = ARTIFACTS_ENSEMBLE) -> list[int]:
    """The versions of `ensemble` that hold exported artifacts, oldest first."""
    folder = Path(repository) / ensemble
    return sorted(
        int(p.name) for p in folder.glob("*") if p.name.isdigit() and (p / ARTIFACTS_FILE).is_file()
    )


def latest_version_dir(repository: Path, ensemble: str = ARTIFACTS_ENSEMBLE) -> Path:
    """The newest version directory of `ensemble` that holds exported artifacts."""
    versions = exported_versions(repository, ensemble)
    if not versions:
        raise FileNotFoundError(
            f"no exported model version in {Path(repository) / ensemble}; run `fbmr export` first"
        )
    return Path(repository) / ensemble / str(versions[-1])


@dataclass(frozen=True)
class Toolchain:
    """The library versions and ONNX opset that made an export's files."""

    torch: str
    onnx: str
    onnxruntime: str
    opset: int


@dataclass(frozen=True)
class Provenance:
    """How an exported version was made: from which run, at which precision, how close its ONNX
    files came to PyTorch, and with which toolchain."""

    run: str
    image_trunk: dict[str, str]  # backbone and starting weights, as the image stage recorded
    precision: str
    parity_max_abs_diff: dict[str, float]  # per model, the float32 files
    toolchain: Toolchain
    int8: dict[str, Any] | None = None  # INT8 only: how each model was made and the gate


@dataclass(frozen=True)
class ModelVersionSpec:
    """`fbmr.json`: what one exported version's ensembles carry beside their models."""

    # 1: the unversioned files of format "fbmr.model_version/1", without the toolchain
    SCHEMA_VERSION: ClassVar[int] = 2

    version: int
    target: str
    classes: list[str]
    image_spec: ImageSpec
    max_length: int
    serving: dict[str, Any]  # the serving settings the model configs were written with
    provenance: Provenance
    tokenizer: str = ARTIFACTS_TOKENIZER
    labels: str = ARTIFACTS_LABELS

    def to_dict(self) -> dict[str, object]:
        # the provenance's fields at the top level, beside the rest
        data = {**asdict(self), **asdict(self.provenance), "image_spec": self.image_spec.to_dict()}
        del data["provenance"]
        return stamped(self.SCHEMA_VERSION, {"format": ARTIFACTS_FORMAT, **data})

    @classmethod
    def from_dict(cls, data: object, source: str = ARTIFACTS_FILE) -> ModelVersionSpec:
        d = checked(data, cls.SCHEMA_VERSION, source, "re-run `fbmr export` on the trained run")
        if d["format"] != ARTIFACTS_FORMAT:
            raise ValueError(f"{source}: format {d['format']!r}, not {ARTIFACTS_FORMAT!r}")
        return cls(
            version=int(d["version"]),
            target=str(d["target"]),
            classes=[str(c) for c in d["classes"]],
            image_spec=ImageSpec.from_dict(d["image_spec"]),
            max_length=int(d["max_length"]),
            serving=dict(d["serving"]),
            provenance=Provenance(
                run=str(d["run"]),
                image_trunk=dict(d["image_trunk"]),
                precision=str(d["precision"]),
                parity_max_abs_diff={k: float(v) for k, v in d["parity_max_abs_diff"].items()},
                toolchain=Toolchain(**d["toolchain"]),
                int8=d["int8"],
            ),
            tokenizer=str(d["tokenizer"]),
            labels=str(d["labels"]),
        )

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> ModelVersionSpec:
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))


@dataclass(frozen=True)
class ModelArtifacts:
    version: int
    labels: LabelMap
    tokenizer: Tokenizer
    image_spec: ImageSpec

    @classmethod
    def load(
        cls, repository: Path, *, version: int | None = None, ensemble: str = ARTIFACTS_ENSEMBLE
    ) -> ModelArtifacts:
        """The artifacts of exported `version` in `repository` (default: the latest)."""
        if version is None:
            path = latest_version_dir(repository, ensemble)
        else:
            path = Path(repository) / ensemble / str(version)
            if not (path / ARTIFACTS_FILE).is_file():
                raise FileNotFoundError(f"{path} holds no exported model version")
        spec = ModelVersionSpec.load(path / ARTIFACTS_FILE)
        return cls(
            int(path.name),
            LabelMap.load(path / spec.labels),
            Tokenizer.load(path / spec.tokenizer),
            spec.image_spec,
        )

    def image_input(
        self,
        photo: ImageSource,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        budget: PixelBudget | None = None,
    ) -> NDArray[np.uint8]:
        """A photo as the image ensembles' input (uint8 pixels), without the batch axis; raises
        ImageDecodeError (ImageTooLargeError over `max_pixels`) for an unusable photo. With a
        `budget`, its decoding waits its turn within it."""
        return image_pixels(photo, self.image_spec, max_pixels, budget)

    def text_input(self, text: str) -> NDArray[np.int64]:
        """A listing text as the text ensembles' token ids, without the batch axis."""
        return self.tokenizer.encode(text)
