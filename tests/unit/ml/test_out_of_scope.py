"""The out-of-scope score: what it flags, and that the served graph computes the fitted statistics.

A clinician sees the flag on a result; if the ONNX graph Triton runs and the fitted artifact
disagreed, the flag would mean something nobody evaluated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sightline_common.manifest import PreprocessSpec, load_manifest, sha256_file
from sightline_explain.core.nets import build_model, load_checkpoint

from sightline.ml.export import OUT_OF_SCOPE_OUTPUT, export_onnx
from sightline.ml.out_of_scope import OutOfScopeStats, ScoredNet, fit_stats, pooled_features
from sightline.ml.placeholder import placeholder_fields
from sightline.ml.prediction import model_inputs

from .conftest import REPOSITORY

WITH_SCORE = sorted(
    p.parent.name
    for p in REPOSITORY.glob("*/manifest.json")
    if load_manifest(REPOSITORY, p.parent.name).out_of_scope is not None
)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Skin-toned noisy fields with a dark blob: rough, but what a derm model's input looks like."""
    rng = np.random.default_rng(seed)
    base = np.asarray([200, 150, 130], np.float32) + rng.normal(0, 6, (n, size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2
    base[:, blob] -= 90
    return base.clip(0, 255).astype(np.uint8)


def test_the_score_is_higher_far_from_the_training_features() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (2000, 6))
    labels = (rng.random(2000) < 0.3).astype(np.int64)
    train[labels == 1] += 1.0
    val = rng.normal(0, 1, (500, 6))
    sharp = rng.normal(-7, 0.3, 500)
    stats = fit_stats(train, labels, val, sharp, 0.995)
    inside = stats.score(rng.normal(0, 1, (500, 6)), rng.normal(-7, 0.3, 500))
    far = stats.score(rng.normal(6, 1, (500, 6)), rng.normal(-7, 0.3, 500))
    blurred = stats.score(rng.normal(0, 1, (500, 6)), np.full(500, -10.0))
    assert np.quantile(inside, 0.99) < 1.3 and far.min() > 2 and blurred.min() > 2


def test_the_exported_graph_computes_the_numpy_reference(tmp_path: Path) -> None:
    """A fresh network and statistics: the ONNX score equals the reference; the logit is the network's."""
    fields = placeholder_fields()
    spec = PreprocessSpec.model_validate(fields["preprocessing"])
    torch.manual_seed(0)
    net = build_model(fields["architecture"]).eval()
    inputs = model_inputs(_images(48, spec.height), spec)
    logits, feats, sharp = pooled_features(net, inputs, spec)
    stats = fit_stats(feats[:32], np.arange(32) % 2, feats[32:], sharp[32:], 0.9)
    export_onnx(
        ScoredNet(net, stats, spec),
        tmp_path / "m.onnx",
        spec.height,
        spec.width,
        3,
        ("logit", OUT_OF_SCOPE_OUTPUT),
    )
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logit", OUT_OF_SCOPE_OUTPUT]
    got_logit, got_score = session.run(None, {"image": inputs})
    np.testing.assert_allclose(got_logit[:, 0], logits, atol=1e-4)
    np.testing.assert_allclose(got_score[:, 0], stats.score(feats, sharp), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", WITH_SCORE)
def test_the_served_model_computes_its_fitted_artifact(name: str) -> None:
    """model.onnx's second output is the score of out_of_scope.npz on model.pt's features."""
    manifest = load_manifest(REPOSITORY, name)
    oos = manifest.out_of_scope
    assert oos is not None
    folder = REPOSITORY / name
    assert manifest.artifacts[oos.artifact] == sha256_file(folder / oos.artifact)
    for config in ("config.pbtxt", "configs/local.pbtxt"):
        text = (folder / config).read_text()
        assert text.index('name: "logit"') < text.index(f'name: "{OUT_OF_SCOPE_OUTPUT}"'), config
    spec = manifest.preprocessing
    stats = OutOfScopeStats.load(folder / oos.artifact)
    net = load_checkpoint(str(folder / f"{manifest.version}/model.pt"), manifest.architecture)
    images = _images(6, spec.height)
    if spec.colour == "MONOCHROME":
        images = images.mean(-1, keepdims=True).repeat(3, -1).astype(np.uint8)
    inputs = model_inputs(images, spec)
    logits, feats, sharp = pooled_features(net, inputs, spec)
    session = ort.InferenceSession(
        str(folder / f"{manifest.version}/model.onnx"), providers=["CPUExecutionProvider"]
    )
    got_logit, got_score = session.run(["logit", OUT_OF_SCOPE_OUTPUT], {"image": inputs})
    np.testing.assert_allclose(got_logit[:, 0], logits, atol=1e-4)
    np.testing.assert_allclose(got_score[:, 0], stats.score(feats, sharp), rtol=1e-3, atol=1e-3)
    # A grey card and a uniform field are nothing like a lesion photograph: flagged.
    flat = model_inputs(
        np.stack([np.full((spec.height, spec.width, 3), v, np.uint8) for v in (128, 250)]), spec
    )
    assert (session.run([OUT_OF_SCOPE_OUTPUT], {"image": flat})[0][:, 0] > oos.threshold).all()


def test_evaluation_reports_how_many_images_are_out_of_scope(tmp_path: Path) -> None:
    """Evaluating the served model on drawn cartoon lesions: the report says they are out of scope."""
    from sightline.ml.evaluate import run_evaluation

    from .conftest import make_tiny_dataset

    folder = make_tiny_dataset(tmp_path / "folder", per_split_label=6)
    result = run_evaluation(
        REPOSITORY,
        "derm-cnn",
        dataset=folder,
        split="test",
        out=tmp_path / "out",
        cache_dir=None,
        n_bootstrap=20,
    )
    oos = result["out_of_scope"]
    assert oos["n"] == 12 and oos["flagged"] >= 0.5 and set(oos["by_site"]) == {"vidir_modern", "rosendahl"}
    assert "## Out-of-scope flag" in (tmp_path / "out" / "REPORT.md").read_text()
