"""Confidence intervals a safety officer can read: lesion-level resampling, none from too few positives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sightline.ml.metrics import auroc
from sightline.ml.report import render_report
from sightline.ml.statistics import bootstrap_ci
from sightline.ml.subgroups import evaluate_predictions


def _lesions(n_lesions: int, images_per_lesion: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    y = (rng.random(n_lesions) < 0.4).astype(np.int64)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.2, n_lesions) + 1.5 * y - 0.6)))
    lesion = np.arange(n_lesions)
    return (
        np.repeat(y, images_per_lesion),
        np.repeat(p, images_per_lesion),
        np.repeat(lesion, images_per_lesion),
    )


def test_images_of_one_lesion_are_resampled_together() -> None:
    y, p, lesion = _lesions(60, 5)
    fns = {"auroc": auroc}
    by_image = bootstrap_ci(y, p, fns, 300, np.random.default_rng(0))["auroc"]
    by_lesion = bootstrap_ci(y, p, fns, 300, np.random.default_rng(0), clusters=lesion)["auroc"]
    # five copies of a lesion are one case: the image bootstrap is about sqrt(5) times too narrow
    assert (by_lesion[1] - by_lesion[0]) > 1.7 * (by_image[1] - by_image[0])
    y1, p1, _ = _lesions(60, 1)
    one_each = bootstrap_ci(y1, p1, fns, 300, np.random.default_rng(0), clusters=[f"L{i}" for i in range(60)])
    assert one_each == bootstrap_ci(y1, p1, fns, 300, np.random.default_rng(0))  # same draws as before


def test_a_group_with_one_positive_gets_no_interval_and_is_flagged() -> None:
    y, p, lesion = _lesions(200, 1)
    groups = pd.DataFrame({"site": ["big"] * 180 + ["small"] * 20})
    y[180:] = 0
    y[185] = 1
    result = evaluate_predictions(y, p, 0.5, groups, n_bootstrap=200, clusters=lesion, min_positives_ci=10)
    small = result["by_attribute"]["site"]["small"]
    assert small["positives"] == 1 and small["auroc"]["value"] is not None
    for metric in ("auroc", "auprc", "sensitivity", "ece"):
        assert small[metric]["ci95"] == [None, None], metric
    assert small["specificity"]["ci95"][0] is not None  # 19 benign: enough for specificity
    assert {"attribute": "site", "group": "small", "positives": 1}.items() <= result["ci_withheld"][0].items()
    big = result["by_attribute"]["site"]["big"]
    assert big["auroc"]["ci95"][0] < big["auroc"]["value"] < big["auroc"]["ci95"][1]
    assert result["bootstrap_unit"] == "lesion"
    report = render_report(
        {**result, "model": "m", "version": 1, "split": "test", "temperature": 1.0, "uncalibrated_ece": 0.1}
    )
    assert "site=small (1 malignant)" in report and "no CI: too few cases" in report
