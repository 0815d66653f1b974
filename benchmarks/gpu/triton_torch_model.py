"""Triton python-backend model for the GPU suite: runs LesionNet in torch on this instance's device.

Copied by the suite to ``<temp repo>/derm-cnn/1/model.py`` beside ``nets.py`` (a copy of
``sightline_explain.core.nets``) and ``model.pt``; the stub's interpreter sees neither the
repository nor PYTHONPATH, so everything it imports sits in this folder or in that interpreter.
Tensors cross the backend boundary through DLPack, not numpy: on the GPU machine numpy 2 breaks
the backend's numpy path. Parameters (config.pbtxt): ``architecture`` (JSON, the manifest's
entry), ``precision`` (fp32, bf16, fp16) and ``channels_last`` (yes/no).
"""

import json
import os
import sys
from typing import Any

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import to_dlpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nets import load_checkpoint  # a sibling file, found through the path set above

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        if gpu:
            torch.cuda.set_device(self.device)
        self.dtype = DTYPES[params.get("precision", "fp32")]
        self.channels_last = params.get("channels_last", "no") == "yes"
        here = os.path.join(args["model_repository"], args["model_version"])
        model = load_checkpoint(os.path.join(here, "model.pt"), json.loads(params["architecture"]))
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        torch.backends.cudnn.benchmark = gpu

    def execute(self, requests: list[Any]) -> list[Any]:
        parts = [
            torch.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name).to_dlpack())
            for r in requests
        ]
        sizes = [p.shape[0] for p in parts]
        x = torch.cat([p.to(self.device, non_blocking=True) for p in parts])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32),
        ):
            logits = self.model(x)
        # The output (4 bytes an image) goes back through host memory: no CUDA IPC pool needed.
        out = logits.float().cpu()
        responses = []
        for chunk in torch.split(out, sizes):
            tensor = pb_utils.Tensor.from_dlpack(self.output_name, to_dlpack(chunk.contiguous()))
            responses.append(pb_utils.InferenceResponse([tensor]))
        return responses
