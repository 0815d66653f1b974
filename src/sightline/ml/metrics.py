"""Classification and calibration metrics, from scikit-learn where it has them."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

ECE_BINS = 15
METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ece")


def expected_calibration_error(y_true: ArrayLike, prob: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - confidence| weighted by bin size.

    Binary form (Naeini et al. 2015): the observed malignant rate against the mean predicted
    probability in each bin. scikit-learn's ``calibration_curve`` gives the same per-bin means
    but not the bin weights, hence this one function.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def auroc(y_true: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC, or NaN when the group has one class only."""
    y = np.asarray(y_true)
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def auprc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Average precision, or NaN when the group has no positive."""
    y = np.asarray(y_true)
    return (
        float(average_precision_score(y, score)) if y.sum() > 0 and len(np.unique(y)) == 2 else float("nan")
    )


def sensitivity(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    _, _, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return float(tp / (tp + fn)) if tp + fn else float("nan")


def specificity(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    tn, fp, _, _ = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return float(tn / (tn + fp)) if tn + fp else float("nan")


def _fmt(m: dict[str, Any], withheld: bool = False) -> str:
    v, ci = m["value"], m["ci95"]
    if v is None:
        return "n/a"
    if withheld:
        return f"{v:.3f} (no CI: too few cases)"
    return f"{v:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci[0] is not None else f"{v:.3f}"


def metrics_table(rows: dict[str, dict[str, Any]], positive: str = "malignant") -> str:
    """Markdown table: group, n, positives, then each metric with its 95% CI."""
    head = (
        f"| group | n | {positive} | AUROC | AUPRC | sensitivity | specificity | ECE |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {g} | {r['n']} | {r['positives']} | "
        + " | ".join(_fmt(r[k], k in r.get("ci_withheld", {}).get("metrics", ())) for k in METRICS)
        + " |\n"
        for g, r in rows.items()
    )
    return head + body
