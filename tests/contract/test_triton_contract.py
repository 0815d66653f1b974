"""What preprocess sends is what Triton's configurations declare, and both agree with the manifest.

The pbtxt files are parsed with Triton's own schema (tritonclient's ``model_config_pb2`` and
protobuf's ``text_format``) in a child process: tritonclient's gRPC protobufs cannot be loaded
in a process that also loads kserve's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sightline_common.manifest import ModelManifest, load_manifest
from sightline_preprocess.clients.triton import ModelMetadata, TensorSpec
from sightline_preprocess.core.contract import contract_problems

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "model_repository" / "derm-cnn"
CONFIGS = {
    "config.pbtxt": MODEL_DIR / "config.pbtxt",
    "configs/local.pbtxt": MODEL_DIR / "configs" / "local.pbtxt",
}

_PARSE = r"""
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
out = {}
for path in sys.argv[1:]:
    cfg = text_format.Parse(open(path).read(), model_config_pb2.ModelConfig())
    out[path] = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE, *map(str, CONFIGS.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    return {name: parsed[str(path)] for name, path in CONFIGS.items()}


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return load_manifest(REPO / "model_repository", "derm-cnn")


def _as_metadata(cfg: dict) -> ModelMetadata:
    """What Triton's model metadata reports for a config (batch dimension first as -1)."""
    batch = (-1,) if int(cfg.get("max_batch_size", 0)) > 0 else ()

    def specs(items: list[dict]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                t["name"], t["data_type"].removeprefix("TYPE_"), batch + tuple(int(d) for d in t["dims"])
            )
            for t in items
        )

    return ModelMetadata(cfg["name"], ("1",), specs(cfg["input"]), specs(cfg.get("output", [])))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_agrees_with_the_manifest(
    configs: dict[str, dict], manifest: ModelManifest, name: str
) -> None:
    cfg = configs[name]
    assert cfg["name"] == manifest.name
    assert contract_problems(manifest, _as_metadata(cfg)) == []


@pytest.mark.parametrize("name", CONFIGS)
def test_preprocess_output_fits_the_config(
    configs: dict[str, dict], manifest: ModelManifest, name: str
) -> None:
    """A real DICOM through the transform gives exactly the tensor the config declares."""
    from sightline_preprocess.core.transform import transform_batch

    from tests.unit.preprocess.preprocess_files import accepted, to_bytes

    batch, _ = transform_batch(
        [to_bytes(accepted("US1_UNCR.dcm", manifest.preprocessing))], manifest.preprocessing, 1 << 24
    )
    tin = configs[name]["input"][0]
    assert tin["data_type"] == "TYPE_FP32" and batch.dtype == np.float32
    assert list(batch.shape[1:]) == [int(d) for d in tin["dims"]]
    assert batch.shape[0] <= int(configs[name]["max_batch_size"])


def test_both_configs_declare_the_same_tensors(configs: dict[str, dict]) -> None:
    prod, local = (_as_metadata(configs[n]) for n in CONFIGS)
    assert (prod.inputs, prod.outputs) == (local.inputs, local.outputs)
    assert configs["config.pbtxt"]["max_batch_size"] == configs["configs/local.pbtxt"]["max_batch_size"]


@pytest.mark.parametrize("name", CONFIGS)
def test_dynamic_batching_is_on(configs: dict[str, dict], name: str) -> None:
    assert "dynamic_batching" in configs[name]
    assert int(configs[name]["max_batch_size"]) >= 8


def test_local_config_runs_the_onnx_artifact_in_the_python_backend(configs: dict[str, dict]) -> None:
    local = configs["configs/local.pbtxt"]
    # The version both configs serve (latest: 1): the newest the repository keeps.
    newest = MODEL_DIR / str(max(int(p.name) for p in MODEL_DIR.iterdir() if p.name.isdigit()))
    assert local["backend"] == "python" and (newest / "model.py").is_file()
    assert (newest / "model.onnx").is_file()
    assert configs["config.pbtxt"]["backend"] == "onnxruntime"
