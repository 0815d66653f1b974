"""Triton python-backend model: runs this version's model.onnx with ONNX Runtime on the CPU.

Copied by the exporter to ``<version>/model.py``. All requests of a dynamic batch are
concatenated into one ONNX Runtime call and split back.
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
        self.output_name = config["output"][0]["name"]
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
        outputs = self.session.run([self.output_name], {self.input_name: np.concatenate(batches)})[0]
        responses = []
        start = 0
        for size in sizes:
            out = np.ascontiguousarray(outputs[start : start + size], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out)]))
            start += size
        return responses
