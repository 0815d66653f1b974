"""Triton python-backend model: runs this version's model.onnx with ONNX Runtime on the CPU.

Copied by the exporter to ``<version>/model.py``. All requests of a dynamic batch are
concatenated into one ONNX Runtime call and split back. Every output the configuration declares
(the logit, and the out-of-scope score when the model has one) comes from that one call.
"""

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]
        params = config.get("parameters", {})
        threads = int(params.get("onnx_threads", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle ONNX Runtime threads spin by default, taking CPU from the preprocess service's
        # decoding on a small host.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [b.shape[0] for b in batches]
        outputs = self.session.run(self.output_names, {self.input_name: np.concatenate(batches)})
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + size], dtype=np.float32))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
            start += size
        return responses
