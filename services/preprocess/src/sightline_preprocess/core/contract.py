"""The contract between the manifest, the transformer's output and Triton's model metadata."""

from __future__ import annotations

from sightline_common.manifest import ModelManifest

from sightline_preprocess.clients.triton import ModelMetadata


def contract_problems(manifest: ModelManifest, metadata: ModelMetadata) -> list[str]:
    """Reasons why Triton's model does not take what this transformer produces (empty: agrees)."""
    spec = manifest.preprocessing
    problems: list[str] = []
    if len(metadata.inputs) != 1:
        problems.append(f"expected one input tensor, Triton declares {len(metadata.inputs)}")
    if len(metadata.outputs) != 1:
        problems.append(f"expected one output tensor, Triton declares {len(metadata.outputs)}")
    if problems:
        return problems
    tin, tout = metadata.inputs[0], metadata.outputs[0]
    channels = 3 if spec.colour == "RGB" else 1
    if tin.datatype != "FP32":
        problems.append(f"input {tin.name} is {tin.datatype}, the transformer sends FP32")
    if list(tin.shape[-3:]) != [channels, spec.height, spec.width]:
        problems.append(
            f"input {tin.name} has shape {list(tin.shape)}, "
            f"manifest says [{channels}, {spec.height}, {spec.width}]"
        )
    if tout.datatype != "FP32" or list(tout.shape[-1:]) != [1]:
        problems.append(f"output {tout.name} must be FP32 [..., 1]")
    return problems
