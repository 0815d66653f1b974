"""The chest X-ray model in the explanation service: its own checkpoint, target layer and input.

Grad-CAM of cxr-pneumonia at the layer its manifest names, on dataset radiographs wrapped as DX
and decoded by the shared path; the parameter-randomisation sanity check (Adebayo et al. 2018);
one service explaining both models, each request by the model it names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sightline_common.errors import Conflict, IntegrityError
from sightline_common.imaging import prepare, read_dicom
from sightline_common.manifest import ModelManifest
from sightline_common.storage import LocalDirStore
from sightline_explain.core.engine import EngineSet, ExplanationEngine
from sightline_explain.core.gradcam import explain_batch
from sightline_explain.core.model import load_served_model
from torch import nn

from tests.unit.explain.conftest import MODEL as DERM
from tests.unit.explain.conftest import REPOSITORY
from tests.unit.explain.explain_fixtures import dicom_bytes, synthetic_lesion
from tests.unit.explain.test_sanity import _check
from tests.unit.preprocess.xray_files import MODEL, xray_bytes

N_IMAGES = 8


@pytest.fixture(scope="module")
def chest() -> tuple[ModelManifest, nn.Module]:
    return load_served_model(REPOSITORY, MODEL)


def _inputs(manifest: ModelManifest, n: int = N_IMAGES) -> torch.Tensor:
    photometric = ("MONOCHROME2", "MONOCHROME1")
    xs = [
        prepare(read_dicom(xray_bytes(i, photometric=photometric[i % 2])), manifest.preprocessing)[0]  # type: ignore[arg-type]
        for i in range(n)
    ]
    return torch.from_numpy(np.stack(xs))


def test_target_layer_comes_from_the_manifest(chest: tuple[ModelManifest, nn.Module], tmp_path: Path) -> None:
    manifest, model = chest
    engine = ExplanationEngine(manifest, model, LocalDirStore(tmp_path))
    assert engine.target_layer == manifest.architecture["target_layer"]
    x = _inputs(manifest, 2)
    cams = explain_batch(model, x, [1, 1], target_layer=engine.target_layer)
    h, w = x.shape[-2:]
    assert cams.heatmaps.shape == (2, h, w)
    # The named layer is where the map is taken: its cells are the map's resolution.
    assert cams.raw.shape[-2:] == (h // 16, w // 16)
    earlier = explain_batch(model, x, [1, 1], target_layer="features.2")
    assert earlier.raw.shape[-2:] == (h // 8, w // 8)


def test_a_manifest_naming_no_layer_is_refused_at_load(
    chest: tuple[ModelManifest, nn.Module], tmp_path: Path
) -> None:
    manifest, model = chest
    wrong = manifest.model_copy(update={"architecture": {**manifest.architecture, "target_layer": "nope.9"}})
    with pytest.raises(AttributeError):
        ExplanationEngine(wrong, model, LocalDirStore(tmp_path))


def test_hooked_layer_equals_the_split_at_features(chest: tuple[ModelManifest, nn.Module]) -> None:
    """Grad-CAM through a forward hook (any layer) and through the features/head split agree."""
    manifest, model = chest

    class Wrapped(nn.Module):  # no ``features``/``forward_head``: only the hook path applies
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(x)
            return out

    x = _inputs(manifest, 3)
    split = explain_batch(model, x, [1, 0, 1], target_layer=manifest.architecture["target_layer"])
    hooked = explain_batch(Wrapped(model).eval(), x, [1, 0, 1], target_layer="net.features.3")
    torch.testing.assert_close(hooked.heatmaps, split.heatmaps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(hooked.logits, split.logits)


def test_randomised_chest_model_gives_different_maps(chest: tuple[ModelManifest, nn.Module]) -> None:
    manifest, model = chest
    assert not manifest.placeholder
    rhos = _check(model, _inputs(manifest))
    assert float(np.mean(rhos)) < 0.5, rhos


def test_one_service_explains_both_models_by_name(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    engines = EngineSet.load(REPOSITORY, [DERM, MODEL], store)
    chest = engines.get(MODEL, 1)
    derm = engines.get(DERM, None)
    with pytest.raises(Conflict) as exc:
        engines.get("ct-model", None)
    assert exc.value.status == 409 and exc.value.extra["loaded_models"] == sorted([DERM, MODEL])
    with pytest.raises(Conflict):
        engines.get(MODEL, chest.manifest.version + 1)
    xray = chest.prepare(xray_bytes(0))
    photo = derm.prepare(dicom_bytes(synthetic_lesion(np.random.default_rng(0), size=200)[0]))
    assert xray.tensor.shape[0] == 1 and photo.tensor.shape[0] == 3
    jobs = [(MODEL, xray, 1), (DERM, photo, 1), (MODEL, xray, 0)]
    out = engines.compute(jobs)
    alone = chest.compute([xray, xray], [1, 0])
    np.testing.assert_allclose(out[0][0], alone.heatmaps[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(out[2][0], alone.heatmaps[1].numpy(), atol=1e-6)
    assert out[1][0].shape == photo.tensor.shape[1:]
    response = chest.publish(xray, out[0][0], out[0][1], 1, "explanations/cxr-test", 0.0)
    assert response.model_name == MODEL and response.model_sha256 == chest.manifest.artifacts["1/model.pt"]


def test_tampered_chest_checkpoint_is_refused(tmp_path: Path) -> None:
    shutil.copytree(REPOSITORY / MODEL, tmp_path / MODEL, ignore=shutil.ignore_patterns("*.onnx"))
    pt = tmp_path / MODEL / "1" / "model.pt"
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        EngineSet.load(tmp_path, [MODEL], LocalDirStore(tmp_path / "objects"))
