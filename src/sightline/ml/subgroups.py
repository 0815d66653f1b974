"""Metrics overall and per patient group (sex, age band, site) with CIs, and the gaps between groups."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from numpy.typing import NDArray

from sightline.ml.metrics import METRICS, auprc, auroc, expected_calibration_error, sensitivity, specificity
from sightline.ml.statistics import Metric, bootstrap_ci, clean

ATTRIBUTES = ("sex", "age_band", "site")
# Largest between-group difference tolerated before a gap is flagged (the target for
# AUROC; the others are this project's review thresholds).
GAP_TOLERANCE = {"auroc": 0.05, "auprc": 0.10, "sensitivity": 0.10, "specificity": 0.10, "ece": 0.05}
# A group enters the gap of a metric only with enough cases for that metric to be stable.
MIN_POSITIVES = 50
MIN_NEGATIVES = 50


def metric_functions(threshold: float) -> dict[str, Metric]:
    """Metric name -> f(y_true, calibrated probability), for MetricFrame and the bootstrap."""

    def at_threshold(fn: Metric, y: Any, p: Any) -> float:
        return fn(y, (np.asarray(p) >= threshold).astype(int))

    return {
        "auroc": auroc,
        "auprc": auprc,
        "sensitivity": partial(at_threshold, sensitivity),
        "specificity": partial(at_threshold, specificity),
        "ece": expected_calibration_error,
    }


def _count(y: Any, p: Any) -> float:
    return float(len(y))


def _positives(y: Any, p: Any) -> float:
    return float(np.sum(y))


def summary(
    y: NDArray[np.int64], p: NDArray[np.float64], threshold: float, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Counts and every metric with its 95% bootstrap CI for one set of cases."""
    fns = metric_functions(threshold)
    ci = bootstrap_ci(y, p, fns, n_bootstrap, np.random.default_rng(seed))
    return {
        "n": len(y),
        "positives": int(y.sum()),
        **{k: {"value": clean(fn(y, p)), "ci95": [clean(v) for v in ci[k]]} for k, fn in fns.items()},
    }


def evaluate_predictions(
    y: NDArray[np.int64],
    prob: NDArray[np.float64],
    threshold: float,
    groups: pd.DataFrame,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Overall and per-group metrics with 95% bootstrap CIs, and the largest gaps per attribute."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    fns = metric_functions(threshold)
    rng = np.random.default_rng(seed)
    overall_ci = bootstrap_ci(y, prob, fns, n_bootstrap, rng)
    overall = {
        "n": len(y),
        "positives": int(y.sum()),
        **{
            k: {"value": clean(fn(y, prob)), "ci95": [clean(v) for v in overall_ci[k]]}
            for k, fn in fns.items()
        },
    }
    by_attribute: dict[str, Any] = {}
    gaps: dict[str, Any] = {}
    for attribute in groups.columns:
        frame = MetricFrame(
            metrics={**fns, "n": _count, "positives": _positives},
            y_true=y,
            y_pred=prob,
            sensitive_features=groups[attribute].astype(str).to_numpy(),
        )
        table = frame.by_group
        per_group: dict[str, Any] = {}
        for group, row in table.iterrows():
            mask = groups[attribute].astype(str).to_numpy() == str(group)
            ci = bootstrap_ci(y[mask], prob[mask], fns, n_bootstrap, rng)
            per_group[str(group)] = {
                "n": int(row["n"]),
                "positives": int(row["positives"]),
                **{k: {"value": clean(row[k]), "ci95": [clean(v) for v in ci[k]]} for k in fns},
            }
        by_attribute[attribute] = per_group
        gaps[attribute] = _gaps(per_group)
    flagged = [
        {"attribute": a, "metric": m, **g}
        for a, per_metric in gaps.items()
        for m, g in per_metric.items()
        if g.get("flagged")
    ]
    flagged.sort(key=lambda g: -g["gap"] / GAP_TOLERANCE[g["metric"]])
    return {
        "threshold": threshold,
        "overall": overall,
        "by_attribute": by_attribute,
        "gaps": gaps,
        "flagged_gaps": flagged,
        "n_bootstrap": n_bootstrap,
        "gap_rules": {
            "tolerance": GAP_TOLERANCE,
            "min_positives": MIN_POSITIVES,
            "min_negatives": MIN_NEGATIVES,
            "note": "groups below the minimum counts are reported but left out of the gap of that metric",
        },
    }


def _eligible(group: dict[str, Any], metric: str) -> bool:
    pos, neg = group["positives"], group["n"] - group["positives"]
    if metric == "sensitivity":
        return bool(pos >= MIN_POSITIVES)
    if metric == "specificity":
        return bool(neg >= MIN_NEGATIVES)
    if metric == "ece":
        return bool(group["n"] >= MIN_POSITIVES + MIN_NEGATIVES)
    return bool(pos >= MIN_POSITIVES and neg >= MIN_NEGATIVES)


def _gaps(per_group: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRICS:
        values = {
            g: v[metric]["value"]
            for g, v in per_group.items()
            if _eligible(v, metric) and v[metric]["value"] is not None and g != "unknown"
        }
        if len(values) < 2:
            out[metric] = {
                "gap": None,
                "groups": sorted(values),
                "flagged": False,
                "note": "fewer than two groups with enough cases",
            }
            continue
        best = max(values, key=lambda g: values[g])
        worst = min(values, key=lambda g: values[g])
        if metric == "ece":  # lower is better
            best, worst = worst, best
        gap = abs(values[best] - values[worst])
        out[metric] = {
            "gap": round(gap, 4),
            "best": best,
            "worst": worst,
            "groups": sorted(values),
            "tolerance": GAP_TOLERANCE[metric],
            "flagged": bool(gap > GAP_TOLERANCE[metric]),
        }
    return out
