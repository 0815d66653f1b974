"""Percentile bootstrap confidence intervals, and the rounding evaluation results are stored with.

Resampling is by cluster (lesion): several images of one lesion are not independent cases, so a
resample draws lesions with replacement and takes all their images. With every image its own
cluster this is the ordinary case bootstrap, draw for draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

Metric = Callable[[Any, Any], float]
#: Below this share of defined draws (e.g. resamples without a positive) no interval is reported.
MIN_DEFINED_DRAWS = 0.95


def cluster_members(clusters: Sequence[Any] | NDArray[Any] | None, n: int) -> list[NDArray[np.int64]]:
    """Row indices of each cluster, clusters in order of first appearance (None: one row each)."""
    if clusters is None:
        return [np.array([i], dtype=np.int64) for i in range(n)]
    codes, _ = pd.factorize(pd.Series(np.asarray(clusters)).astype(str))
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return [part.astype(np.int64) for part in np.split(order, bounds)] if n else []


def bootstrap_ci(
    y: NDArray[np.int64],
    prob: NDArray[np.float64],
    fns: dict[str, Metric],
    n_bootstrap: int,
    rng: np.random.Generator,
    *,
    clusters: Sequence[Any] | NDArray[Any] | None = None,
    advance: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Percentile 95% interval of each metric over resamples of the clusters (NaN draws dropped).

    When fewer than ``MIN_DEFINED_DRAWS`` of the draws define a metric the interval is NaN:
    dropping the undefined draws would leave a falsely narrow interval.
    """
    members = cluster_members(clusters, len(y))
    singletons = clusters is None or len(members) == len(y)
    k = len(members)
    draws: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n_bootstrap if k else 0):
        picks = rng.integers(0, k, k)
        idx = picks if singletons else np.concatenate([members[c] for c in picks])
        for name, fn in fns.items():
            draws[name].append(fn(y[idx], prob[idx]))
        if advance is not None:
            advance(1)
    out = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=np.float64)
        defined = arr[~np.isnan(arr)]
        enough = len(arr) > 0 and len(defined) >= MIN_DEFINED_DRAWS * len(arr)
        out[name] = (
            [float(np.quantile(defined, 0.025)), float(np.quantile(defined, 0.975))]
            if enough
            else [float("nan")] * 2
        )
    return out


def clean(value: float | None) -> float | None:
    """A metric value as stored in JSON: rounded to 4 places; NaN (undefined) as None."""
    return None if value is None or np.isnan(value) else round(float(value), 4)
