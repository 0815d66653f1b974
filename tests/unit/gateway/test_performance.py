"""Real-world performance estimates match an offline computation exactly (scikit-learn's confusion
matrix and calibration_curve, statsmodels-free Wilson by its textbook formula)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sightline_gateway.core.monitoring import publish
from sightline_gateway.core.performance import (
    Case,
    calibration,
    calibration_gap,
    group_by,
    performance,
    proxy_truth,
    rolling,
    summarise,
    wilson,
)
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic(n: int = 600, seed: int = 3) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        p = float(rng.uniform(0, 1))
        truth = bool(rng.uniform() < p)
        verified = bool(rng.uniform() < (0.9 if p >= 0.3 else 0.3))  # benign-looking: biopsied less
        cases.append(
            Case(
                model="derm-cnn",
                version=str(1 + i % 2),
                tenant=("hospital-a", "hospital-b")[i % 3 == 0],
                site=("north", "south")[i % 5 == 0],
                sex=("F", "M", "unknown")[i % 3],
                age_band=("30-44", "60-74")[i % 4 == 0],
                at=T0 + timedelta(hours=i),
                probability=p,
                refer=p >= 0.3,
                truth=truth if verified else None,
                verdict=(None, "agree", "disagree", "uncertain")[i % 4],
            )
        )
    return cases


def test_confusion_matches_sklearn() -> None:
    cases = synthetic()
    confirmed = [c for c in cases if c.truth is not None]
    tn, fp, fn, tp = confusion_matrix(
        [c.truth for c in confirmed], [c.refer for c in confirmed], labels=[False, True]
    ).ravel()
    perf = performance(cases)
    assert (perf.confirmed.tp, perf.confirmed.fp, perf.confirmed.tn, perf.confirmed.fn) == (tp, fp, tn, fn)
    assert perf.confirmed.sensitivity.value == tp / (tp + fn)
    assert perf.confirmed.specificity.value == tn / (tn + fp)
    assert perf.confirmed.ppv.value == tp / (tp + fp)
    assert perf.confirmed.npv.value == tn / (tn + fn)
    assert perf.results == len(cases) and perf.with_outcome == len(confirmed)
    assert perf.verified_share.value == len(confirmed) / len(cases)


def test_proxy_uses_verdicts_only_where_no_outcome() -> None:
    cases = synthetic()
    truth = [proxy_truth(c) for c in cases]
    pairs = [(t, c.refer) for t, c in zip(truth, cases, strict=True) if t is not None]
    tn, fp, fn, tp = confusion_matrix(
        [t for t, _ in pairs], [d for _, d in pairs], labels=[False, True]
    ).ravel()
    perf = performance(cases)
    assert (perf.with_proxy.tp, perf.with_proxy.fp, perf.with_proxy.tn, perf.with_proxy.fn) == (
        tp,
        fp,
        tn,
        fn,
    )
    case = cases[0]
    assert proxy_truth(Case(**{**case.__dict__, "truth": None, "verdict": "disagree"})) is (not case.refer)
    assert proxy_truth(Case(**{**case.__dict__, "truth": None, "verdict": "uncertain"})) is None


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (7, 20), (93, 100), (1, 1)])
def test_wilson_interval_textbook(k: int, n: int) -> None:
    z, p = 1.959963984540054, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    est = wilson(k, n)
    assert est.low == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert est.high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert wilson(7, 20).low == pytest.approx(0.1812, abs=1e-4)  # published: 0.181 - 0.567
    assert wilson(0, 0).value is None


def test_calibration_matches_sklearn() -> None:
    confirmed = [c for c in synthetic() if c.truth is not None]
    bins = calibration(confirmed)
    prob_true, prob_pred = calibration_curve(
        [c.truth for c in confirmed], [c.probability for c in confirmed], n_bins=10, strategy="uniform"
    )
    filled = [b for b in bins if b.n]
    assert [b.observed.value for b in filled] == pytest.approx(list(prob_true), abs=1e-12)
    assert [b.mean_predicted for b in filled] == pytest.approx(list(prob_pred), abs=1e-12)
    assert sum(b.n for b in bins) == len(confirmed)
    gap = calibration_gap(bins, min_n=1)
    assert gap == pytest.approx(max(abs(a - b) for a, b in zip(prob_true, prob_pred, strict=True)))


def test_groups_and_rolling_windows_partition_the_cases() -> None:
    cases = synthetic()
    groups = group_by(cases, ("version", "site", "sex"))
    assert sum(len(v) for v in groups.values()) == len(cases)
    assert ("1", "north", "F") in groups
    windows = rolling(cases, T0, T0 + timedelta(hours=600), timedelta(hours=100), timedelta(hours=100))
    assert len(windows) == 6 and sum(w.performance.results for w in windows) == len(cases)


def test_publish_sets_gauges_per_model_version_and_tenant() -> None:
    cases = synthetic()
    now = T0 + timedelta(days=60)
    assert publish(summarise(cases, now - timedelta(days=7))) == 4
    mine = [c for c in cases if c.version == "2" and c.tenant == "hospital-a"]
    perf = performance(mine)
    labels = {"model": "derm-cnn", "version": "2", "tenant": "hospital-a"}
    sens = REGISTRY.get_sample_value(
        "sightline_realworld_estimate", {**labels, "metric": "sensitivity", "bound": "upper"}
    )
    assert sens == perf.confirmed.sensitivity.high
    positives = REGISTRY.get_sample_value(
        "sightline_realworld_cases", {**labels, "kind": "confirmed_positive"}
    )
    assert positives == perf.confirmed_positives
    backlog = REGISTRY.get_sample_value("sightline_realworld_cases", {**labels, "kind": "backlog"})
    assert backlog == sum(c.refer and c.truth is None for c in mine)
