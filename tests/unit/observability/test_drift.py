"""Drift detection: shifted inputs raise PSI past the threshold, held-in inputs do not.

Generated images always run; the HAM10000 checks (marker ``dataset``) use the real model
manifest's reference and real images from other splits and sites.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from prometheus_client import REGISTRY
from sightline_common.drift import (
    ALL,
    DEFAULT_PSI_THRESHOLD,
    SCORE,
    DriftMonitor,
    FeatureReference,
    Reference,
    drift_of,
    read_observations,
)
from sightline_common.imaging import image_stats
from sightline_common.manifest import ModelManifest

from tests.conftest import skip_or_fail_in_ci

from .conftest import ROOT, SHIFTS, as_rgb, lesion_image

WINDOW = 200
FEATURES = ("brightness", "contrast", "red", "green", "blue", "sharpness")


def _stats(images: list[Image.Image]) -> list[dict[str, float]]:
    return [{k: v for k, v in image_stats(as_rgb(im)).as_dict().items() if k in FEATURES} for im in images]


def _max_psi(reference: Reference, rows: list[dict[str, float]]) -> tuple[str, float]:
    psi, _ = drift_of(reference, rows)
    name = max(psi, key=lambda k: psi[k])
    return name, psi[name]


@pytest.fixture(scope="module")
def generated() -> tuple[Reference, list[Image.Image]]:
    rng = np.random.default_rng(7)
    train = [lesion_image(rng) for _ in range(1200)]
    stats = _stats(train)
    reference = Reference.from_samples({k: [s[k] for s in stats] for k in FEATURES})
    held_in = [lesion_image(rng) for _ in range(600)]
    return reference, held_in


def _false_alarm_rate(reference: Reference, rows: list[dict[str, float]], windows: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(windows):
        pick = rng.choice(len(rows), size=WINDOW, replace=False)
        if _max_psi(reference, [rows[i] for i in pick])[1] > DEFAULT_PSI_THRESHOLD:
            alarms += 1
    return alarms / windows


def test_held_in_generated_images_do_not_alarm(generated: tuple[Reference, list[Image.Image]]) -> None:
    reference, held_in = generated
    rate = _false_alarm_rate(reference, _stats(held_in), windows=200, seed=1)
    print(f"generated images: false-alarm rate {rate:.3f} over 200 windows of {WINDOW}")
    assert rate <= 0.01


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_shifted_generated_images_raise_drift(
    generated: tuple[Reference, list[Image.Image]], shift: str
) -> None:
    reference, held_in = generated
    rows = _stats([SHIFTS[shift](im) for im in held_in[:WINDOW]])
    feature, psi = _max_psi(reference, rows)
    print(f"generated images, {shift}: max PSI {psi:.2f} on {feature}")
    assert psi > DEFAULT_PSI_THRESHOLD


def test_psi_of_constant_reference_flags_other_sizes() -> None:
    ref = FeatureReference.from_samples([150.0] * 50)
    assert ref.psi(np.full(100, 150.0)) == pytest.approx(0.0)
    assert ref.psi(np.full(100, 300.0)) > 1 and ref.psi(np.full(100, 75.0)) > 1


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_monitor_exports_gauges_per_version_and_segment(
    generated: tuple[Reference, list[Image.Image]], tmp_path: Path
) -> None:
    reference, held_in = generated
    scores = Reference.from_samples(
        {**{k: [0.5] for k in FEATURES}, SCORE: list(np.linspace(0, 1, 101))}, threshold=0.5
    ).features[SCORE]
    ref = Reference({**reference.features, SCORE: scores}, positive_rate=0.5)
    obs = tmp_path / "obs.jsonl"
    monitor = DriftMonitor(window=WINDOW, min_count=100, every=20, observations_file=obs)
    monitor.register_reference("unit-model", 3, ref)
    rng = np.random.default_rng(3)
    dark = _stats([SHIFTS["darker"](im) for im in held_in[:120]])
    for i, stats in enumerate(_stats(held_in[:120])):
        score = float(rng.uniform())
        monitor.observe("unit-model", 3, stats, score, score >= 0.5, segment="site_a")
        monitor.observe("unit-model", 3, dark[i], score, score >= 0.5, segment="site_b")

    assert _value("sightline_model_reference_positive_rate", model="unit-model", version="3") == 0.5
    a = _value("sightline_drift_psi", model="unit-model", version="3", feature="brightness", segment="site_a")
    b = _value("sightline_drift_psi", model="unit-model", version="3", feature="brightness", segment="site_b")
    assert a is not None and b is not None
    assert a < DEFAULT_PSI_THRESHOLD < b, (a, b)
    assert (
        _value("sightline_drift_psi", model="unit-model", version="3", feature=SCORE, segment=ALL) is not None
    )
    assert (
        _value(
            "sightline_drift_ks_statistic",
            model="unit-model",
            version="3",
            feature="brightness",
            segment="site_b",
        )
        > 0.3
    )
    positives = _value(
        "sightline_model_decisions_total", model="unit-model", version="3", decision="positive"
    )
    negatives = _value(
        "sightline_model_decisions_total", model="unit-model", version="3", decision="negative"
    )
    assert positives + negatives == 240
    assert _value("sightline_model_score_count", model="unit-model", version="3") == 240
    assert monitor.window_sizes("unit-model", 3) == {ALL: 200, "site_a": 120, "site_b": 120}
    assert "brightness" in monitor.drifted("unit-model", 3, "site_b")
    assert not monitor.drifted("unit-model", 3, "site_a")
    rows = read_observations(obs)
    assert len(rows) == 240 and {"model", "version", "segment", "decision", SCORE, "brightness"} <= set(
        rows[0]
    )


def test_segment_labels_are_validated_and_capped() -> None:
    ref = Reference({"brightness": FeatureReference.from_samples(np.linspace(0, 1, 100))})
    monitor = DriftMonitor(window=10, min_count=5, every=1, max_segments=3)
    monitor.register_reference("cap-model", 1, ref)
    for seg in ["Jane Doe^PHI", "s1", "s2", "s3", "s4", "s5"]:
        for _ in range(5):
            monitor.observe("cap-model", 1, {"brightness": 0.5}, 0.1, False, segment=seg)
    sizes = monitor.window_sizes("cap-model", 1)
    assert "Jane Doe^PHI" not in sizes and "other" in sizes
    assert len(sizes) <= 3 + 2


def test_unknown_model_counts_scores_without_drift() -> None:
    monitor = DriftMonitor()
    monitor.observe("unregistered", 1, {"brightness": 0.5}, 0.9, True)
    assert (
        _value("sightline_model_decisions_total", model="unregistered", version="1", decision="positive") == 1
    )
    assert monitor.current("unregistered", 1) == {}


# --- HAM10000 ---------------------------------------------------------------------------------


def _load(root: Path, rows: pd.DataFrame) -> list[Image.Image]:
    return [Image.open(root / p).convert("RGB") for p in rows["image"]]


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    path = ROOT / "model_repository" / "derm-cnn" / "manifest.json"
    m = ModelManifest.model_validate(json.loads(path.read_text()))
    if not m.reference_distribution.get("image_stats"):
        skip_or_fail_in_ci("the derm-cnn manifest has no reference_distribution (run the ml export)")
    return m


@pytest.mark.dataset
def test_ham10000_held_in_and_shifted_against_manifest(ham10000: Path, manifest: ModelManifest) -> None:
    """Held-in (val/test of the training sites): few false alarms; darker/blurred/cast: alarm."""
    meta = pd.read_csv(ham10000 / "metadata.csv")
    held = meta[meta["split"].isin(["val", "test"])].sample(n=800, random_state=0)
    images = _load(ham10000, held)
    reference = Reference.from_manifest(manifest)
    reference = Reference({k: v for k, v in reference.features.items() if k in FEATURES})
    rows = _stats(images)
    rate = _false_alarm_rate(reference, rows, windows=300, seed=2)
    print(f"HAM10000 held-in vs manifest reference: false-alarm rate {rate:.3f} over 300 windows of {WINDOW}")
    assert rate <= 0.05
    for shift, fn in sorted(SHIFTS.items()):
        feature, psi = _max_psi(reference, _stats([fn(im) for im in images[:WINDOW]]))
        print(f"HAM10000 {shift}: max PSI {psi:.2f} on {feature}")
        assert psi > DEFAULT_PSI_THRESHOLD, shift


@pytest.mark.dataset
def test_ham10000_another_site_raises_drift(ham10000: Path) -> None:
    """A reference from the Vienna sites; a window from Rosendahl (Australia) drifts."""
    meta = pd.read_csv(ham10000 / "metadata.csv")
    vienna = meta[meta["site"].isin(["vidir_modern", "vidir_molemax"])]
    train = vienna[vienna["split"] == "train"].sample(n=1000, random_state=0)
    held = vienna[vienna["split"] != "train"].sample(n=500, random_state=1)
    other = meta[meta["site"] == "rosendahl"].sample(n=WINDOW, random_state=2)
    ref_rows = _stats(_load(ham10000, train))
    reference = Reference.from_samples({k: [r[k] for r in ref_rows] for k in FEATURES})
    rate = _false_alarm_rate(reference, _stats(_load(ham10000, held)), windows=200, seed=3)
    feature, psi = _max_psi(reference, _stats(_load(ham10000, other)))
    print(
        f"HAM10000 Vienna reference: held-in false alarms {rate:.3f}; rosendahl PSI {psi:.2f} on {feature}"
    )
    assert rate <= 0.05
    assert psi > DEFAULT_PSI_THRESHOLD
