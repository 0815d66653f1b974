"""Percentile bootstrap confidence intervals, and the rounding evaluation results are stored with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

Metric = Callable[[Any, Any], float]


def bootstrap_ci(
    y: NDArray[np.int64],
    prob: NDArray[np.float64],
    fns: dict[str, Metric],
    n_bootstrap: int,
    rng: np.random.Generator,
) -> dict[str, list[float]]:
    """Percentile 95% interval of each metric over resamples of the cases (NaN draws dropped)."""
    draws: dict[str, list[float]] = {k: [] for k in fns}
    n = len(y)
    for _ in range(n_bootstrap if n else 0):
        idx = rng.integers(0, n, n)
        for name, fn in fns.items():
            draws[name].append(fn(y[idx], prob[idx]))
    out = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[name] = (
            [float(np.quantile(arr, 0.025)), float(np.quantile(arr, 0.975))]
            if len(arr)
            else [float("nan")] * 2
        )
    return out


def clean(value: float | None) -> float | None:
    """A metric value as stored in JSON: rounded to 4 places; NaN (undefined) as None."""
    return None if value is None or np.isnan(value) else round(float(value), 4)
