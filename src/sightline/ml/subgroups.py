"""Metrics overall and per patient group (sex, age band, site) with CIs, and the gaps between groups."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from numpy.typing import NDArray

from sightline.ml.metrics import METRICS, auprc, auroc, expected_calibration_error, sensitivity, specificity
from sightline.ml.progress import Advance, Silent, Tracker
from sightline.ml.statistics import Metric, bootstrap_ci, clean

ATTRIBUTES = ("sex", "age_band", "site")
# Largest between-group difference tolerated before a gap is flagged (the target for
# AUROC; the others are this project's review thresholds).
GAP_TOLERANCE = {"auroc": 0.05, "auprc": 0.10, "sensitivity": 0.10, "specificity": 0.10, "ece": 0.05}
# A group enters the gap of a metric only with enough cases for that metric to be stable.
MIN_POSITIVES = 50
MIN_NEGATIVES = 50
# Below this many malignant (or, for specificity, benign) cases a group's CI is not reported: the
# bootstrap of one or two positives gives an interval that looks narrow and means nothing.
MIN_POSITIVES_CI = 10
NAN = float("nan")


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


def _ci_withheld(metric: str, positives: int, negatives: int, minimum: int) -> bool:
    """No interval where the metric rests on fewer than ``minimum`` cases of a class it needs."""
    if metric == "specificity":
        return negatives < minimum
    if metric == "auroc":
        return positives < minimum or negatives < minimum
    return positives < minimum  # sensitivity, auprc, ece (calibration of the malignant probability)


def _with_cis(
    y: NDArray[np.int64],
    p: NDArray[np.float64],
    values: dict[str, float],
    fns: dict[str, Metric],
    rng: np.random.Generator,
    *,
    n_bootstrap: int,
    clusters: NDArray[Any] | None,
    min_positives_ci: int,
    advance: Advance | None,
) -> dict[str, Any]:
    """Counts, each metric's value and 95% CI; CIs withheld (and said so) for too few cases."""
    positives = int(y.sum())
    negatives = len(y) - positives
    withheld = [k for k in fns if _ci_withheld(k, positives, negatives, min_positives_ci)]
    kept = {k: fn for k, fn in fns.items() if k not in withheld}
    # The draws are made even when every CI is withheld so later groups see the same random stream.
    ci = bootstrap_ci(y, p, kept, n_bootstrap, rng, clusters=clusters, advance=advance)
    entry: dict[str, Any] = {
        "n": len(y),
        "positives": positives,
        **{k: {"value": clean(values[k]), "ci95": [clean(v) for v in ci.get(k, [NAN, NAN])]} for k in fns},
    }
    if withheld:
        entry["ci_withheld"] = {
            "metrics": withheld,
            "reason": f"fewer than {min_positives_ci} malignant or benign cases for these metrics",
        }
    return entry


def summary(
    y: NDArray[np.int64],
    p: NDArray[np.float64],
    threshold: float,
    n_bootstrap: int,
    seed: int,
    *,
    clusters: NDArray[Any] | None = None,
    min_positives_ci: int = MIN_POSITIVES_CI,
    advance: Advance | None = None,
) -> dict[str, Any]:
    """Counts and every metric with its 95% bootstrap CI for one set of cases."""
    fns = metric_functions(threshold)
    values = {k: fn(y, p) for k, fn in fns.items()}
    rng = np.random.default_rng(seed)
    return _with_cis(
        y,
        p,
        values,
        fns,
        rng,
        n_bootstrap=n_bootstrap,
        clusters=clusters,
        min_positives_ci=min_positives_ci,
        advance=advance,
    )


def evaluate_predictions(
    y: NDArray[np.int64],
    prob: NDArray[np.float64],
    threshold: float,
    groups: pd.DataFrame,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    clusters: NDArray[Any] | None = None,
    min_positives_ci: int = MIN_POSITIVES_CI,
    tracker: Tracker | None = None,
    cluster_unit: str = "lesion",
) -> dict[str, Any]:
    """Overall and per-group metrics with 95% bootstrap CIs, and the largest gaps per attribute.

    ``clusters`` (lesion or patient ids, one per case; ``cluster_unit`` names them) make the
    bootstrap resample lesions or patients, not images.
    """
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    cl = None if clusters is None else np.asarray(clusters)
    fns = metric_functions(threshold)
    rng = np.random.default_rng(seed)
    n_groups = sum(groups[a].astype(str).nunique() for a in groups.columns)
    advance = (tracker or Silent()).task("bootstrap (95% CIs)", n_bootstrap * (1 + n_groups))
    options: dict[str, Any] = {
        "n_bootstrap": n_bootstrap,
        "min_positives_ci": min_positives_ci,
        "advance": advance,
    }
    values = {k: fn(y, prob) for k, fn in fns.items()}
    overall = _with_cis(y, prob, values, fns, rng, clusters=cl, **options)
    by_attribute: dict[str, Any] = {}
    gaps: dict[str, Any] = {}
    for attribute in groups.columns:
        frame = MetricFrame(
            metrics={**fns, "n": _count, "positives": _positives},
            y_true=y,
            y_pred=prob,
            sensitive_features=groups[attribute].astype(str).to_numpy(),
        )
        per_group: dict[str, Any] = {}
        for group, row in frame.by_group.iterrows():
            mask = groups[attribute].astype(str).to_numpy() == str(group)
            per_group[str(group)] = _with_cis(
                y[mask],
                prob[mask],
                {k: row[k] for k in fns},
                fns,
                rng,
                clusters=None if cl is None else cl[mask],
                **options,
            )
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
        "ci_withheld": [
            {"attribute": a, "group": g, "positives": v["positives"], "metrics": v["ci_withheld"]["metrics"]}
            for a, per in [("all", {"all": overall}), *by_attribute.items()]
            for g, v in per.items()
            if "ci_withheld" in v
        ],
        "n_bootstrap": n_bootstrap,
        "bootstrap_unit": "image" if cl is None else cluster_unit,
        "min_positives_ci": min_positives_ci,
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
