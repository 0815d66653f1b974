"""Integrity of the served checkpoint, model refusal, the overlay and the summary figures."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image
from sightline_common.errors import Conflict, IntegrityError
from sightline_common.storage import LocalDirStore
from sightline_explain.core.engine import ExplanationEngine
from sightline_explain.core.model import load_served_model
from sightline_explain.core.render import ASSISTIVE_LABEL, heatmap_npy, overlay_figure, overlay_png, summarise

from tests.unit.explain.conftest import MODEL, REPOSITORY
from tests.unit.explain.explain_fixtures import dicom_bytes, synthetic_lesion


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPOSITORY / MODEL, tmp_path / MODEL, ignore=shutil.ignore_patterns("*.onnx", "__pycache__")
    )
    return tmp_path


def test_tampered_checkpoint_is_refused(repo_copy: Path) -> None:
    manifest, _ = load_served_model(repo_copy, MODEL)
    pt = repo_copy / MODEL / f"{manifest.version}/model.pt"
    data = bytearray(pt.read_bytes())
    data[-1] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as exc:
        load_served_model(repo_copy, MODEL)
    assert exc.value.extra["expected"] == manifest.artifacts[f"{manifest.version}/model.pt"]


def test_other_model_or_version_is_a_conflict(served: tuple, tmp_path: Path) -> None:
    manifest, model = served
    engine = ExplanationEngine(manifest, model, LocalDirStore(tmp_path))
    engine.check_model(manifest.name, manifest.version)
    engine.check_model(manifest.name, None)
    for name, version in ((manifest.name, manifest.version + 1), ("other-model", manifest.version)):
        with pytest.raises(Conflict) as exc:
            engine.check_model(name, version)
        assert exc.value.status == 409 and exc.value.extra["reason"] == "model-mismatch"


def test_overlay_carries_label_and_legend_and_shows_the_heat() -> None:
    rgb, _ = synthetic_lesion(np.random.default_rng(0), size=112)
    heat = np.zeros((112, 112), np.float32)
    heat[20:40, 60:90] = 1.0
    fig = overlay_figure(rgb, heat)
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert ASSISTIVE_LABEL in texts
    assert len(fig.axes) == 2, "image axes and colour-bar axes"
    assert fig.axes[1].get_ylim() == (0.0, 1.0)
    png = Image.open(io.BytesIO(overlay_png(rgb, heat))).convert("RGB")
    plain = Image.open(io.BytesIO(overlay_png(rgb, np.zeros_like(heat)))).convert("RGB")
    assert np.abs(np.asarray(png, np.int16) - np.asarray(plain, np.int16)).max() > 100
    # The label is drawn on a red band at the bottom.
    bottom = np.asarray(png)[-40:]
    assert ((bottom[..., 0] > 150) & (bottom[..., 1] < 60)).sum() > 500


def test_summary_and_heatmap_file() -> None:
    heat = np.zeros((101, 51), np.float32)
    heat[100, 0] = 1.0
    heat[:10] = np.maximum(heat[:10], 0.6)
    s = summarise(heat)
    assert (s.peak_row, s.peak_col) == (1.0, 0.0)
    assert s.fraction_above == pytest.approx((10 * 51 + 1) / (101 * 51))
    arr = np.load(io.BytesIO(heatmap_npy(heat)))
    assert arr.dtype == np.float16 and arr.shape == heat.shape


def test_engine_end_to_end_without_ray(served: tuple, tmp_path: Path) -> None:
    manifest, model = served
    store = LocalDirStore(tmp_path)
    engine = ExplanationEngine(manifest, model, store)
    image = engine.prepare(dicom_bytes(synthetic_lesion(np.random.default_rng(3))[0]))
    cams = engine.compute([image], [1])
    res = engine.publish(image, cams.heatmaps[0].numpy(), float(cams.logits[0]), 1, "explanations/t1/", 0.0)
    assert res.heatmap_key == "explanations/t1/heatmap.npy" and store.exists(res.overlay_key)
    assert res.model_sha256 == manifest.artifacts[f"{manifest.version}/model.pt"]
    assert res.probability == pytest.approx(manifest.calibrated_probability(float(cams.logits[0])))
