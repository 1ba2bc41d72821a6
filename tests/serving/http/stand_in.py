"""A stand-in for an exported model repository: one version's artifacts (`fbmr.json`, a label map,
a tokeniser, the image settings) and no models. The facade reads a request's inputs through
these exactly as through a real export, so the checks it makes before calling Triton, and the
photo decoding, run without a trained run; with the Triton URL on a closed port, a request that
passes them all gets a 503 (`overloaded` never: nothing is under way for long)."""

from __future__ import annotations

from pathlib import Path

from fbmr.core.artifacts import (
    ARTIFACTS_FILE,
    REPOSITORY_MANIFEST,
    ModelVersionSpec,
    Provenance,
    Toolchain,
)
from fbmr.core.contract import ARTIFACTS_ENSEMBLE
from fbmr.core.image import ImageSpec
from fbmr.core.labels import LabelMap
from fbmr.core.text import Tokenizer

# Categories as the marketplace names them, commas included (a refusal lists them as JSON)
CLASSES = ["Clothes, Footwear & Accessories", "Home & Garden", "Sports, Leisure & Travel"]
WORDS = ["oak", "chair", "table", "dining", "bike", "shoes", "red"]


def stand_in_repository(root: Path, image_size: int = 224) -> Path:
    """A model repository under `root` holding version 1's artifacts and nothing Triton could
    load; returns its path."""
    version_dir = root / ARTIFACTS_ENSEMBLE / "1"
    version_dir.mkdir(parents=True)
    tokenizer = Tokenizer(WORDS, max_words=16)
    spec = ModelVersionSpec(
        version=1,
        target="cpu",
        classes=CLASSES,
        image_spec=ImageSpec.for_image_size(image_size),
        max_length=tokenizer.max_length,
        serving={},
        provenance=Provenance(
            run="stand-in",
            image_trunk={"backbone": "none", "weights": "none"},
            precision="float32",
            parity_max_abs_diff={},
            toolchain=Toolchain(torch="-", onnx="-", onnxruntime="-", opset=0),
        ),
    )
    tokenizer.save(version_dir / spec.tokenizer)
    LabelMap(CLASSES).save(version_dir / spec.labels)
    spec.save(version_dir / ARTIFACTS_FILE)
    (root / REPOSITORY_MANIFEST).write_text('{"version": 1}\n')
    return root
