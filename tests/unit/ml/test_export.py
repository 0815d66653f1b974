"""Export: model.onnx and model.pt agree; the committed model matches its manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sightline_common.manifest import load_manifest, sha256_file, verify_artifact
from sightline_explain.core.nets import build_model, load_checkpoint

from sightline.ml.export import export_model_atomically
from sightline.ml.placeholder import placeholder_fields
from tests.conftest import skip_or_fail_in_ci

from .conftest import REPOSITORY


def _parity(
    model_dir: Path,
    architecture: dict,
    size: tuple[int, int],
    batch: int = 4,
    channels: int = 3,
    version: int = 1,
) -> float:
    torch.manual_seed(1)
    x = torch.randn(batch, channels, *size)
    net = load_checkpoint(str(model_dir / str(version) / "model.pt"), architecture)
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(
        str(model_dir / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run(["logit"], {"image": x.numpy()})
    return float(np.abs(got - expected).max())


def test_exported_onnx_matches_torch(tmp_path: Path) -> None:
    fields = placeholder_fields()
    torch.manual_seed(0)
    model = build_model(fields["architecture"])
    repo = tmp_path / "repo"
    manifest = export_model_atomically(model, repo, fields, staging=tmp_path / "staging")
    size = (manifest.preprocessing.height, manifest.preprocessing.width)
    assert _parity(repo / manifest.name, manifest.architecture, size) < 1e-4
    # a second export replaces the first in one step and leaves nothing in staging
    export_model_atomically(model, repo, fields, staging=tmp_path / "staging")
    assert not any((tmp_path / "staging").iterdir())
    assert (repo / manifest.name / "manifest.json").is_file()


#: The reference models and what each must declare: input channels, licence, accepted modalities.
COMMITTED = {
    "derm-cnn": (3, "CC BY-NC-SA 4.0", ["XC", "OT"]),
    "cxr-pneumonia": (1, "CC BY 4.0", ["DX", "CR"]),
}


@pytest.fixture(scope="module", params=sorted(COMMITTED))
def committed(request: pytest.FixtureRequest):
    name = request.param
    if not (REPOSITORY / name / "manifest.json").is_file():
        skip_or_fail_in_ci(f"no {name} in model_repository")
    return load_manifest(REPOSITORY, name)


def test_committed_manifest_digests_match_files(committed) -> None:
    root = REPOSITORY / committed.name
    v = committed.version
    on_disk = {f"{v}/model.onnx", f"{v}/model.pt", f"{v}/model.py", "config.pbtxt", "configs/local.pbtxt"}
    assert on_disk <= set(committed.artifacts)
    for relative, digest in committed.artifacts.items():
        assert sha256_file(root / relative) == digest, relative
        verify_artifact(REPOSITORY, committed, relative)


def test_committed_model_is_trained_and_consistent(committed) -> None:
    channels, licence, modalities = COMMITTED[committed.name]
    root = REPOSITORY / committed.name
    assert not committed.placeholder
    spec = committed.preprocessing
    assert len(spec.mean) == len(spec.std) == channels
    assert spec.accepted_modalities == modalities
    for config in (root / "config.pbtxt", root / "configs" / "local.pbtxt"):
        text = config.read_text()
        assert f"dims: [ {channels}, {spec.height}, {spec.width} ]" in text, config
        assert '"image"' in text and '"logit"' in text and f'name: "{committed.name}"' in text
    assert 0 < committed.threshold < 1 and committed.temperature > 0
    assert committed.reference_distribution["image_stats"]["n"] > 0
    assert licence in committed.licence
    size = (spec.height, spec.width)
    assert _parity(root, committed.architecture, size, channels=channels, version=committed.version) < 1e-4
    for relative in (f"{committed.version}/model.onnx", f"{committed.version}/model.pt"):
        assert (root / relative).stat().st_size < 30 * 2**20
