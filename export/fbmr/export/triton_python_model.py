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

Rows in parallel (`row_slices`, off by default): a batch of several rows is cut into slices run
at once, each on one thread (0: one slice per core), and only a single row runs on the whole pool.
The ensemble runs the image and text encoders at once in two processes, and a pool that
parallelises each operator waits at every operator's end for its slowest thread, so one thread
descheduled by the other process holds up the rest; slices wait only at the batch's end. On 2
cores the image encoder's CPU a photo at 8 users fell from 97 to 90 ms, but one instance then
idles at each batch's end; with two instances batch scoring ran 7-15% faster and the tail at 8
users widened, a trade for throughput-bound work (docs/results.md). It holds a second session.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
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
        model = str(Path(args["model_repository"]) / args["model_version"] / "model.onnx")
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.slices = int(parameters.get("row_slices", "1")) or len(os.sched_getaffinity(0))
        if self.slices > 1:
            # one thread a slice: onnxruntime runs a 1-thread session on the caller's thread
            options.intra_op_num_threads = 1
            self.narrow = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            self.pool = ThreadPoolExecutor(self.slices, thread_name_prefix="rows")
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def _run(self, feeds: dict[str, Any]) -> list[Any]:
        rows = next(iter(feeds.values())).shape[0]
        if self.slices < 2 or rows < 2:
            outputs: list[Any] = self.session.run(self.output_names, feeds)
            return outputs
        # the same cut of every input; each slice's outputs, then joined in order
        count = min(self.slices, rows)
        cut = [
            dict(zip(feeds, part, strict=True))
            for part in zip(
                *(np.array_split(value, count) for value in feeds.values()), strict=True
            )
        ]
        parts = self.pool.map(lambda part: self.narrow.run(self.output_names, part), cut)
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

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
            outputs = self._run(feeds)
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
