"""ROC and reliability plots of an evaluation (PNG files beside its report)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_curve

from sightline.ml.metrics import auroc, expected_calibration_error

#: (label, labels, probabilities) of one curve.
Series = tuple[str, NDArray[np.int64], NDArray[np.float64]]


def plot_roc(path: Path, title: str, curves: list[Series]) -> None:
    """ROC curves, one per series with both classes present, AUROC and counts in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, y, p in curves:
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auroc(y, p):.3f}, n={len(y)}, pos={int(y.sum())})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(path: Path, title: str, series: list[Series], positive: str = "malignant") -> None:
    """Reliability diagram (15 equal-width bins, ECE in the legend) above a histogram of scores."""
    from sklearn.calibration import calibration_curve

    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfect calibration")
    for label, y, p in series:
        frac, mean = calibration_curve(y, p, n_bins=15, strategy="uniform")
        ax.plot(mean, frac, marker="o", ms=3, label=f"{label} (ECE {expected_calibration_error(y, p):.3f})")
        hx.hist(p, bins=30, range=(0, 1), histtype="step", label=label)
    ax.set(ylabel=f"observed {positive} fraction", title=title, ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    hx.set(xlabel=f"predicted probability of {positive}", ylabel="images", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
