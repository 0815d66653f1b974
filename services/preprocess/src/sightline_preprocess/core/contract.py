"""The contract between the manifest, the transformer's output and Triton's model metadata."""

from __future__ import annotations

from sightline_common.manifest import ModelManifest

from sightline_preprocess.clients.triton import ModelMetadata


def contract_problems(manifest: ModelManifest, metadata: ModelMetadata) -> list[str]:
    """Reasons why Triton's model does not take what this transformer produces (empty: agrees).

    The first output is the logit; a manifest with an ``out_of_scope`` entry needs a second, the
    out-of-scope score (both FP32 ``[..., 1]``; their names are config.pbtxt's).
    """
    spec = manifest.preprocessing
    problems: list[str] = []
    expected_outputs = 2 if manifest.out_of_scope is not None else 1
    if len(metadata.inputs) != 1:
        problems.append(f"expected one input tensor, Triton declares {len(metadata.inputs)}")
    if len(metadata.outputs) != expected_outputs:
        what = "one output tensor" if expected_outputs == 1 else "two output tensors (logit, score)"
        problems.append(f"expected {what}, Triton declares {len(metadata.outputs)}")
    if problems:
        return problems
    tin = metadata.inputs[0]
    channels = 3 if spec.colour == "RGB" else 1
    if tin.datatype != "FP32":
        problems.append(f"input {tin.name} is {tin.datatype}, the transformer sends FP32")
    if list(tin.shape[-3:]) != [channels, spec.height, spec.width]:
        problems.append(
            f"input {tin.name} has shape {list(tin.shape)}, "
            f"manifest says [{channels}, {spec.height}, {spec.width}]"
        )
    for tout in metadata.outputs:
        if tout.datatype != "FP32" or list(tout.shape[-1:]) != [1]:
            problems.append(f"output {tout.name} must be FP32 [..., 1]")
    return problems
