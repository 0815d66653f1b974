"""The training reference that drift monitoring compares live inputs and scores against."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from sightline.ml.data import STAT_NAMES


def _quantiles(values: NDArray[np.float64]) -> dict[str, Any]:
    qs = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
    counts, edges = np.histogram(values, bins=20)
    return {
        "quantiles": {f"{q:g}": round(float(np.quantile(values, q)), 6) for q in qs},
        "mean": round(float(values.mean()), 6),
        "std": round(float(values.std()), 6),
        "histogram": {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]},
    }


def reference_distribution(
    stats: NDArray[np.float32],
    val_probs: NDArray[np.float64],
    score_of: str = "calibrated probability of malignancy",
) -> dict[str, Any]:
    """Training image statistics and validation scores, for drift monitoring."""
    return {
        "image_stats": {
            "source": "sightline_common.imaging.image_stats of the decoded training images (before resize)",
            "n": len(stats),
            **{name: _quantiles(stats[:, i].astype(np.float64)) for i, name in enumerate(STAT_NAMES)},
        },
        "score": {
            "source": f"{score_of} on the validation split",
            "n": len(val_probs),
            **_quantiles(val_probs),
        },
    }
