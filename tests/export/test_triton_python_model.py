"""The cpu target's python-backend model (`triton_python_model.py`): a batch cut into row slices
gives what one run of the whole batch gives, row for row. The module is loaded as Triton's stub
loads it; only its import of Triton's utility module is satisfied here, since `_run` does not use
it (serving through a real tritonserver is covered in tests/serving)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fbmr.export.repository import PYTHON_MODEL

INPUTS = {"a": 4, "b": 2}
OUTPUTS = {"y": 3, "z": 2}


def _model(path: Path) -> None:
    """Two inputs and two outputs with a dynamic batch axis: y = relu(a @ w), z = 2 b."""
    weights = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "w"], ["aw"]),
            helper.make_node("Relu", ["aw"], ["y"]),
            helper.make_node("Add", ["b", "b"], ["z"]),
        ],
        "two_by_two",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", d])
            for n, d in INPUTS.items()
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", d])
            for n, d in OUTPUTS.items()
        ],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row_slices: str | None) -> Any:
    """The model as Triton's stub would initialise it, with the given `row_slices` parameter."""
    (tmp_path / "1").mkdir(exist_ok=True)
    _model(tmp_path / "1" / "model.onnx")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("pb_utils"))
    spec = importlib.util.spec_from_file_location("served_model", PYTHON_MODEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parameters = {"intra_op_threads": {"string_value": "1"}}
    if row_slices is not None:
        parameters["row_slices"] = {"string_value": row_slices}
    config = {
        "input": [{"name": n} for n in INPUTS],
        "output": [{"name": n} for n in OUTPUTS],
        "parameters": parameters,
    }
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(tmp_path),
            "model_version": "1",
        }
    )
    return model


@pytest.mark.parametrize("rows", [1, 2, 5, 9])
@pytest.mark.parametrize("row_slices", ["0", "2", "3"])
def test_row_slices_give_the_whole_batch_answer(tmp_path, monkeypatch, rows, row_slices):
    model = _served(tmp_path, monkeypatch, row_slices)
    rng = np.random.default_rng(rows)
    feeds = {n: rng.normal(size=(rows, d)).astype(np.float32) for n, d in INPUTS.items()}
    whole = ort.InferenceSession(str(tmp_path / "1" / "model.onnx")).run(list(OUTPUTS), feeds)
    if model.slices > 1:  # record the rows each 1-thread run is given
        narrow, seen = model.narrow, []

        class Recording:
            def run(self, names: list[str], part: dict[str, np.ndarray]) -> Any:
                seen.append(len(part["a"]))
                return narrow.run(names, part)

        model.narrow = Recording()
    sliced = model._run(feeds)
    assert [o.shape for o in sliced] == [(rows, d) for d in OUTPUTS.values()]
    for got, expected in zip(sliced, whole, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    if model.slices > 1 and rows > 1:
        # every row run once, on as many 1-thread runs as slices allow, sizes within one row
        assert sum(seen) == rows and len(seen) == min(model.slices, rows)
        assert max(seen) - min(seen) <= 1


def test_row_slices_default_off_for_repositories_written_before_them(tmp_path, monkeypatch):
    assert _served(tmp_path, monkeypatch, None).slices == 1
    assert _served(tmp_path, monkeypatch, "3").slices == 3
    # "0": one slice per core this process may run on (five, as the scheduler is told here)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 3, 5, 7})
    assert _served(tmp_path, monkeypatch, "0").slices == 5
