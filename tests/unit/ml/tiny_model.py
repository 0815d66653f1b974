"""A served model small enough to build in milliseconds: ONNX that scores dark images as malignant."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from sightline_common.manifest import ModelManifest, sha256_file

from sightline.ml.placeholder import placeholder_fields

SIZE = 32


def write_tiny_model(repository: Path, name: str = "derm-cnn", version: int = 1) -> ModelManifest:
    """logit = -4 x mean(normalised image): the generated malignant lesions are darker."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["m", "shape"], ["r"]),
            helper.make_node("Mul", ["r", "k"], ["logit"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        [
            helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1]),
            helper.make_tensor("k", TensorProto.FLOAT, [1], [-4.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    folder = repository / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / str(version) / "model.onnx")
    fields = placeholder_fields()
    fields.update(
        name=name,
        placeholder=False,
        preprocessing={**fields["preprocessing"], "height": SIZE, "width": SIZE},
        threshold=0.5,
    )
    manifest = ModelManifest.model_validate(
        {
            **fields,
            "version": version,
            "artifacts": {f"{version}/model.onnx": sha256_file(folder / f"{version}/model.onnx")},
        }
    )
    (folder / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return manifest
