"""The artifacts an exported model version carries beside its ensembles: the tokeniser, label map
and image settings that turn a listing into the tensors those models expect.

`fbmr export` writes them into each ensemble's version directory of the Triton model repository;
the facade, the index builder and the benchmarks read the latest version's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fbmr.core.image import ImageSpec
from fbmr.core.labels import LabelMap
from fbmr.core.text import Tokenizer

ARTIFACTS_FILE = "fbmr.json"
ARTIFACTS_FORMAT = "fbmr.model_version/1"


def latest_version_dir(repository: Path, ensemble: str = "product_classifier") -> Path:
    """The newest version directory of `ensemble` that holds exported artifacts."""
    versions = sorted(
        (int(p.name) for p in (Path(repository) / ensemble).glob("*") if p.name.isdigit()),
        reverse=True,
    )
    for version in versions:
        path = Path(repository) / ensemble / str(version)
        if (path / ARTIFACTS_FILE).is_file():
            return path
    raise FileNotFoundError(
        f"no exported model version in {Path(repository) / ensemble}; run `fbmr export` first"
    )


@dataclass(frozen=True)
class ModelArtifacts:
    version: int
    labels: LabelMap
    tokenizer: Tokenizer
    image_spec: ImageSpec

    @classmethod
    def load(cls, repository: Path, ensemble: str = "product_classifier") -> ModelArtifacts:
        """The artifacts of the latest exported version in `repository`."""
        path = latest_version_dir(repository, ensemble)
        manifest = json.loads((path / ARTIFACTS_FILE).read_text())
        if manifest.get("format") != ARTIFACTS_FORMAT:
            raise ValueError(f"{path / ARTIFACTS_FILE}: format {manifest.get('format')!r}")
        return cls(
            int(path.name),
            LabelMap.load(path / manifest["labels"]),
            Tokenizer.load(path / manifest["tokenizer"]),
            ImageSpec.from_dict(manifest["image_spec"]),
        )
