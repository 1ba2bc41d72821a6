"""Triton python-backend model that runs the model.onnx beside it with onnxruntime.

Copied as `model.py` into every model version of the cpu repository target, so that the
pip-installed tritonserver (python backend only) serves the same ONNX files, tensors and
ensembles as the onnxruntime backend does on GPU. It imports nothing from fbmr: it runs inside
Triton's python-backend stub, which needs only numpy and onnxruntime.

The requests of one dynamic batch are concatenated and run as one onnxruntime call, which is
where batching pays on CPU.

Threads: every composing model runs in its own stub process, each with its own onnxruntime thread
pool. onnxruntime's pool spins while idle by default, which is harmless for one session alone on a
machine but lets several idle pools steal the cores from the one that has work (on 2 cores the
same three sessions ran batch 1 in 45 ms spinning and 19 ms not). The config's parameters set the
pool size and turn spinning off.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        spinning = parameters.get("allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    # Triton's requests and responses (pb_utils has no type information)
    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            per_request = [
                [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names]
                for r in requests
            ]
            sizes = [inputs[0].shape[0] for inputs in per_request]
            feeds = {
                name: np.concatenate([inputs[i] for inputs in per_request])
                for i, name in enumerate(self.input_names)
            }
            outputs = self.session.run(self.output_names, feeds)
        except Exception as err:  # reported to each caller rather than crashing the stub
            error = pb_utils.TritonError(f"{type(err).__name__}: {err}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + size]))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
