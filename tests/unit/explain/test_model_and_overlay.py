"""Integrity of the served checkpoint, model refusal, the overlay and the summary figures."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sightline_common.errors import Conflict, IntegrityError
from sightline_common.storage import LocalDirStore
from sightline_explain.core.engine import ExplanationEngine
from sightline_explain.core.model import load_served_model
from sightline_explain.core.render import ASSISTIVE_LABEL, heatmap_npy, overlay_png, summarise

from tests.conftest import skip_or_fail_in_ci
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
    png = Image.open(io.BytesIO(overlay_png(rgb, heat, title="derm-cnn v1"))).convert("RGB")
    plain = Image.open(io.BytesIO(overlay_png(rgb, np.zeros_like(heat), title="derm-cnn v1"))).convert("RGB")
    assert png.width > rgb.shape[1] and png.height > rgb.shape[0]
    changed = np.abs(np.asarray(png, np.int16) - np.asarray(plain, np.int16)).max(axis=2) > 40
    rows, cols = np.nonzero(changed)
    # The heat shows where it is: the changed pixels lie in the image's upper right quarter.
    assert rows.size > 1000 and np.median(rows) < png.height * 0.4 and np.median(cols) > png.width * 0.35
    # The legend: a colour bar from the colormap's red (1.0, top) to its blue (0.0, bottom).
    right = np.asarray(png, np.int16)[:, int(png.width * 0.78) :]
    red = (right[..., 0] > 110) & (right[..., 1] < 40) & (right[..., 2] < 40)
    blue = (right[..., 2] > 110) & (right[..., 0] < 40) & (right[..., 1] < 40)
    assert red.sum() > 100 and blue.sum() > 100
    assert np.nonzero(red)[0].mean() < np.nonzero(blue)[0].mean()
    # The label is drawn on a red band at the bottom, and it reads as the label.
    bottom = np.asarray(png)[-40:]
    assert ((bottom[..., 0] > 150) & (bottom[..., 1] < 60)).sum() > 500
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        skip_or_fail_in_ci("tesseract is not installed (make tools: scripts/get-tesseract.sh)")
    band = Image.fromarray(255 - np.asarray(png.convert("L"))[-40:]).resize((png.width * 2, 80))
    buf = io.BytesIO()
    band.save(buf, format="PNG")
    ocr = [tesseract, "stdin", "stdout", "--psm", "7"]
    out = subprocess.run(ocr, input=buf.getvalue(), capture_output=True, timeout=60, check=False)

    def same(text: str) -> str:  # a sans-serif capital I reads as l: compare them as one
        return text.strip().lower().replace("l", "i")

    assert same(out.stdout.decode()) == same(ASSISTIVE_LABEL), out


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
