"""The artifacts an exported model version carries beside its ensembles: the tokeniser, label map
and image settings that turn a listing into the tensors those models expect.

`fbmr export` writes them into each ensemble's version directory of the Triton model repository;
the facade, the index builder, the client and the benchmarks read the latest version's, and build
model inputs through `ModelArtifacts.image_input` and `text_input`: the one place a listing's photo
and text become the tensors the served models take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fbmr.core.contract import ARTIFACTS_ENSEMBLE, DEFAULT_MAX_PIXELS
from fbmr.core.image import ImageSource, ImageSpec, image_pixels
from fbmr.core.labels import LabelMap
from fbmr.core.text import Tokenizer

ARTIFACTS_FILE = "fbmr.json"
ARTIFACTS_FORMAT = "fbmr.model_version/1"
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
        manifest = json.loads((path / ARTIFACTS_FILE).read_text())
        if manifest.get("format") != ARTIFACTS_FORMAT:
            raise ValueError(f"{path / ARTIFACTS_FILE}: format {manifest.get('format')!r}")
        return cls(
            int(path.name),
            LabelMap.load(path / manifest["labels"]),
            Tokenizer.load(path / manifest["tokenizer"]),
            ImageSpec.from_dict(manifest["image_spec"]),
        )

    def image_input(
        self, photo: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> NDArray[np.uint8]:
        """A photo as the image ensembles' input (uint8 pixels), without the batch axis; raises
        ImageDecodeError (ImageTooLargeError over `max_pixels`) for an unusable photo."""
        return image_pixels(photo, self.image_spec, max_pixels)

    def text_input(self, text: str) -> NDArray[np.int64]:
        """A listing text as the text ensembles' token ids, without the batch axis."""
        return self.tokenizer.encode(text)
