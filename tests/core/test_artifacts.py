"""fbmr.json (ModelVersionSpec): written and read in one place, refused in another version."""

from __future__ import annotations

import json

import pytest

from fbmr.core.artifacts import ModelVersionSpec, Provenance, Toolchain
from fbmr.core.image import ImageSpec
from fbmr.core.schema import SchemaVersionError


def _spec(int8: dict[str, object] | None = None) -> ModelVersionSpec:
    return ModelVersionSpec(
        version=3,
        target="cpu",
        classes=["a", "b"],
        image_spec=ImageSpec.for_image_size(64),
        max_length=48,
        serving={"max_batch_size": 8},
        provenance=Provenance(
            run="/runs/tiny",
            image_trunk={"backbone": "resnet18", "weights": "none"},
            precision="int8" if int8 else "float32",
            parity_max_abs_diff={"image_encoder": 1e-6},
            toolchain=Toolchain(torch="2.9.0", onnx="1.19.0", onnxruntime="1.23.0", opset=18),
            int8=int8,
        ),
    )


@pytest.mark.parametrize("int8", [None, {"kept_float32": {}, "quantized": {"text_encoder": "x"}}])
def test_the_spec_round_trips_through_its_file(tmp_path, int8):
    spec = _spec(int8)
    spec.save(tmp_path / "fbmr.json")
    assert ModelVersionSpec.load(tmp_path / "fbmr.json") == spec
    written = json.loads((tmp_path / "fbmr.json").read_text())
    # the provenance at the top level, beside what serving reads
    assert written["schema_version"] == ModelVersionSpec.SCHEMA_VERSION
    assert written["toolchain"]["opset"] == 18 and written["precision"] == spec.provenance.precision
    assert written["tokenizer"] == "tokenizer.json" and written["labels"] == "labels.json"


def test_a_file_of_another_version_is_refused_with_what_to_rerun(tmp_path):
    written = _spec().to_dict()
    old = {k: v for k, v in written.items() if k not in ("schema_version", "toolchain")}
    old["format"] = "fbmr.model_version/1"  # as the unversioned exports wrote it
    (tmp_path / "fbmr.json").write_text(json.dumps(old))
    with pytest.raises(SchemaVersionError, match=r"no schema version.*reads schema version 2.*"
                       r"re-run `fbmr export`"):  # fmt: skip
        ModelVersionSpec.load(tmp_path / "fbmr.json")
    with pytest.raises(SchemaVersionError, match=r"fbmr\.json has schema version 99"):
        ModelVersionSpec.from_dict({**written, "schema_version": 99})
