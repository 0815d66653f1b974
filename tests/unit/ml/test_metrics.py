"""Evaluation metrics equal scikit-learn's and fairlearn's on fixed predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, recall_score, roc_auc_score

from sightline.ml.metrics import expected_calibration_error
from sightline.ml.prediction import choose_threshold, sigmoid
from sightline.ml.subgroups import evaluate_predictions
from sightline.ml.train import fit_temperature

Predictions = tuple[NDArray[np.int64], NDArray[np.float64], pd.DataFrame]


@pytest.fixture
def predictions() -> Predictions:
    rng = np.random.default_rng(7)
    n = 600
    y = (rng.random(n) < 0.3).astype(np.int64)
    prob = sigmoid(rng.normal(0, 1, n) + 2.0 * y - 1.0)
    groups = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "site": rng.choice(["a", "b", "c"], n)})
    return y, prob, groups


def test_overall_and_group_metrics_match_sklearn_and_fairlearn(predictions: Predictions) -> None:
    y, prob, groups = predictions
    result = evaluate_predictions(y, prob, 0.4, groups, n_bootstrap=50)
    overall = result["overall"]
    assert overall["auroc"]["value"] == pytest.approx(roc_auc_score(y, prob), abs=1e-4)
    assert overall["auprc"]["value"] == pytest.approx(average_precision_score(y, prob), abs=1e-4)
    assert overall["sensitivity"]["value"] == pytest.approx(recall_score(y, prob >= 0.4), abs=1e-4)
    assert overall["specificity"]["value"] == pytest.approx(recall_score(1 - y, prob < 0.4), abs=1e-4)
    lo, hi = overall["auroc"]["ci95"]
    assert lo < overall["auroc"]["value"] < hi
    frame = MetricFrame(metrics=roc_auc_score, y_true=y, y_pred=prob, sensitive_features=groups["site"])
    for site, value in frame.by_group.items():
        assert result["by_attribute"]["site"][site]["auroc"]["value"] == pytest.approx(value, abs=1e-4)
    gap = result["gaps"]["site"]["auroc"]
    assert gap["gap"] == pytest.approx(frame.difference(), abs=2e-4)


def test_expected_calibration_error_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.7])
    # bins: {0.1, 0.1} -> |0 - 0.1|; {0.7} -> |1 - 0.7|; {0.9} -> |1 - 0.9|
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.1 + 0.25 * 0.3 + 0.25 * 0.1)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_small_groups_stay_out_of_the_gap() -> None:
    y = np.array([0, 1] * 100 + [0, 1] * 10)
    prob = np.where(y == 1, 0.8, 0.2).astype(float)
    prob[-20:] = 0.5
    groups = pd.DataFrame({"site": ["big"] * 200 + ["small"] * 20})
    result = evaluate_predictions(y, prob, 0.5, groups, n_bootstrap=10)
    assert result["gaps"]["site"]["auroc"]["gap"] is None
    assert result["by_attribute"]["site"]["small"]["auroc"]["value"] == 0.5


def test_threshold_reaches_target_sensitivity(predictions: Predictions) -> None:
    y, prob, _ = predictions
    threshold, sens, _ = choose_threshold(prob, y, 0.9)
    assert sens >= 0.9 and recall_score(y, prob >= threshold) == pytest.approx(sens)
    assert recall_score(y, prob >= threshold + 1e-9) < 0.9 or threshold >= prob.max()


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < sigmoid(true_logit)).astype(np.int64)
    assert fit_temperature(true_logit * 3.0, y) == pytest.approx(3.0, rel=0.05)
