"""Export a trained network into a Triton model repository entry.

Writes, for one model version, from one checkpoint:
``<version>/model.pt`` (state dict), ``<version>/model.onnx``, ``config.pbtxt`` (production:
ONNX Runtime backend, GPU, dynamic batching, TensorRT option), ``configs/local.pbtxt`` plus
``<version>/model.py`` (the bundled CPU Triton's python backend running ONNX Runtime) and
``manifest.json`` with the sha256 of every artifact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from sightline_common.imaging import channels
from sightline_common.manifest import ModelManifest, PreprocessSpec, sha256_file
from torch import nn

INPUT_NAME = "image"
OUTPUT_NAME = "logit"
MAX_BATCH = 64

PRODUCTION_CONFIG = """\
# Production configuration: ONNX Runtime backend on GPU (TensorRT accelerator when enabled).
# Tensor names, types and shapes live here and only here; services read them from Triton's
# model metadata at start and refuse to become ready when they disagree with the manifest.
name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [ {{ name: "{input}", data_type: TYPE_FP32, dims: [ {c}, {h}, {w} ] }} ]
output [{outputs}]
instance_group [ {{ kind: KIND_GPU, count: 1 }} ]
dynamic_batching {{
  preferred_batch_size: [ 8, 16, 32 ]
  max_queue_delay_microseconds: 2000
}}
optimization {{
  execution_accelerators {{
    gpu_execution_accelerator : [ {{
      name : "tensorrt"
      parameters {{ key: "precision_mode" value: "FP16" }}
      parameters {{ key: "max_workspace_size_bytes" value: "1073741824" }}
      # Building TensorRT engines takes minutes: keep them (and the timing cache) on the volume
      # the chart mounts here, so a restarted container starts in seconds. Engines are specific
      # to the GPU model and TensorRT version; TensorRT rebuilds when they do not match.
      parameters {{ key: "trt_engine_cache_enable" value: "1" }}
      parameters {{ key: "trt_engine_cache_path" value: "/var/cache/triton/trt" }}
      parameters {{ key: "trt_timing_cache_enable" value: "1" }}
      parameters {{ key: "trt_timing_cache_path" value: "/var/cache/triton/trt" }}
    }} ]
  }}
}}
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""

LOCAL_CONFIG = """\
# CPU configuration for the tritonserver bundled in nvidia-pytriton (python backend only):
# the same model.onnx, run by ONNX Runtime inside the python backend (1/model.py).
# Selected with --model-config-name=local.
name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "{input}", data_type: TYPE_FP32, dims: [ {c}, {h}, {w} ] }} ]
output [{outputs}]
# Two single-threaded instances and no batching delay: measured on a 2-core host (see
# benchmarks/bench_inference.py), a held request cost more than batching gained, and two ONNX
# threads per call starved the preprocess service's decoding.
instance_group [ {{ kind: KIND_CPU, count: 2 }} ]
dynamic_batching {{
  max_queue_delay_microseconds: 0
}}
parameters: {{ key: "onnx_threads" value: {{ string_value: "1" }} }}
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


#: The second output of a model with an out-of-scope score (``sightline.ml.out_of_scope``).
OUT_OF_SCOPE_OUTPUT = "out_of_scope_score"


def export_onnx(
    model: nn.Module,
    path: Path,
    height: int,
    width: int,
    channels: int = 3,
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
) -> None:
    """TorchScript-based ONNX export with a dynamic batch dimension (every output (N, 1))."""
    model = model.eval()
    example = torch.zeros(1, channels, height, width)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(output_names),
        dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in output_names}},
        opset_version=17,
        dynamo=False,
    )


def write_manifest(path: Path, manifest: ModelManifest) -> None:
    """A manifest as the repository keeps it (indented JSON, one trailing newline)."""
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")


def export_model(
    model: nn.Module, repository: Path, manifest_fields: dict[str, Any], *, version: int = 1
) -> ModelManifest:
    """Write every artifact of one model version and its manifest; return the manifest."""
    name = manifest_fields["name"]
    spec = PreprocessSpec.model_validate(manifest_fields["preprocessing"])
    h, w, c = spec.height, spec.width, channels(spec)
    root = repository / name
    vdir = root / str(version)
    if root.exists():
        shutil.rmtree(root)
    (root / "configs").mkdir(parents=True)
    vdir.mkdir()
    model = model.eval().cpu()
    torch.save(model.state_dict(), vdir / "model.pt")
    export_onnx(model, vdir / "model.onnx", h, w, c)
    write_serving_files(root, name, version, h, w, c)
    manifest = ModelManifest.model_validate(
        {**manifest_fields, "version": version, "artifacts": artifact_digests(root)}
    )
    write_manifest(root / "manifest.json", manifest)
    return manifest


def write_serving_files(
    root: Path,
    name: str,
    version: int,
    height: int,
    width: int,
    channels: int = 3,
    *,
    out_of_scope: bool = False,
) -> None:
    """Triton configurations (production and local) and the python-backend model file.

    ``out_of_scope``: the model's ONNX has the out-of-scope score as a second output, declared
    after the logit (services take the first output as the logit, the second as the score).
    """
    names = (OUTPUT_NAME, OUT_OF_SCOPE_OUTPUT) if out_of_scope else (OUTPUT_NAME,)
    outputs = ",".join(f' {{ name: "{n}", data_type: TYPE_FP32, dims: [ 1 ] }}' for n in names) + " "
    fmt = {
        "name": name,
        "max_batch": MAX_BATCH,
        "input": INPUT_NAME,
        "outputs": outputs,
        "h": height,
        "w": width,
        "c": channels,
    }
    (root / "configs").mkdir(exist_ok=True)
    (root / "config.pbtxt").write_text(PRODUCTION_CONFIG.format(**fmt))
    (root / "configs" / "local.pbtxt").write_text(LOCAL_CONFIG.format(**fmt))
    backend = resources.files("sightline.ml").joinpath("triton_python_model.py").read_text()
    (root / str(version) / "model.py").write_text(backend)


def artifact_digests(root: Path) -> dict[str, str]:
    """sha256 of every file of a model folder except its manifest (and its evaluation outputs)."""
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name not in ("manifest.json", "MODEL_CARD.md")
        and "__pycache__" not in p.parts
        and "evaluation" not in p.relative_to(root).parts
    }


def refresh_serving_files(repository: Path, name: str) -> ModelManifest:
    """Rewrite the configurations and backend file of an exported model (same weights) and
    update the manifest's digests: how a serving change reaches a committed model."""
    root = repository / name
    manifest = ModelManifest.model_validate(json.loads((root / "manifest.json").read_text()))
    spec = manifest.preprocessing
    write_serving_files(
        root,
        name,
        manifest.version,
        spec.height,
        spec.width,
        channels(spec),
        out_of_scope=manifest.out_of_scope is not None,
    )
    manifest = manifest.model_copy(update={"artifacts": artifact_digests(root)})
    write_manifest(root / "manifest.json", manifest)
    return manifest


def export_model_atomically(
    model: nn.Module, repository: Path, manifest_fields: dict[str, Any], *, staging: Path, version: int = 1
) -> ModelManifest:
    """Export into a staging folder, then swap it into the repository in one rename.

    Triton may be serving the repository: it never sees a half-written model folder.
    ``staging`` must be on the same filesystem as ``repository`` and outside it.
    """
    name = manifest_fields["name"]
    staging.mkdir(parents=True, exist_ok=True)
    repository.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=staging))
    manifest = export_model(model, tmp, manifest_fields, version=version)
    target = repository / name
    old = tmp / "previous"
    if target.exists():
        target.rename(old)
    (tmp / name).rename(target)
    shutil.rmtree(tmp)
    return manifest
