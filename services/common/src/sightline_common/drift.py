"""Input and prediction drift against the training reference, exported as Prometheus metrics.

The model manifest's ``reference_distribution`` summarises the training images' statistics
(:func:`sightline_common.imaging.image_stats`) and the validation scores as quantiles. A
:class:`DriftMonitor` keeps a sliding window of recent observations per model version and per
segment (``all`` plus an optional site/device label) and computes, for each feature and the
score, the Population Stability Index over the reference's quantile bins and the Kolmogorov-Smirnov
statistic against the reference CDF. PSI is the usual industry measure (0.1 "moderate",
0.2-0.25 "significant" shift); KS adds a bin-free view.

Only aggregate numbers leave this module: no pixels, no identifiers, no per-study values in
labels. Segment labels are coarse, caller-chosen names (a site or device model), validated and
capped in number.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Gauge, Histogram

from sightline_common.manifest import ModelManifest

#: A window shorter than this reports nothing (PSI on a handful of values is noise).
DEFAULT_MIN_COUNT = 100
DEFAULT_WINDOW = 500
#: PSI above this is "significant shift" (the conventional 0.2 cut-off); the alert rule uses it too.
DEFAULT_PSI_THRESHOLD = 0.2
#: Quantile levels used as PSI bin edges (interior), from the manifest's summary.
BIN_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
#: Floor for bin proportions so that an empty bin gives a large but finite PSI.
EPS = 1e-4
SCORE = "score"
ALL = "all"
OTHER = "other"
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

SCORE_BUCKETS = (*(round(0.05 * i, 2) for i in range(1, 20)), 1.0)

DRIFT_PSI = Gauge(
    "sightline_drift_psi",
    "Population Stability Index of a feature (image statistic or score) over the sliding window "
    "against the model's training reference.",
    ["model", "version", "feature", "segment"],
)
DRIFT_KS = Gauge(
    "sightline_drift_ks_statistic",
    "Kolmogorov-Smirnov statistic of a feature over the sliding window against the reference CDF.",
    ["model", "version", "feature", "segment"],
)
DRIFT_WINDOW = Gauge(
    "sightline_drift_window_observations",
    "Observations in the drift window (drift is reported once this reaches the minimum).",
    ["model", "version", "segment"],
)
MODEL_SCORE = Histogram(
    "sightline_model_score",
    "Calibrated probability of the positive label returned per study.",
    ["model", "version"],
    buckets=SCORE_BUCKETS,
)
MODEL_DECISIONS = Counter(
    "sightline_model_decisions_total",
    "Decisions per model version: positive (refer for review at the operating threshold) or negative.",
    ["model", "version", "decision"],
)
OUT_OF_SCOPE_RESULTS = Counter(
    "sightline_model_out_of_scope_results_total",
    "Results per model version and segment by their out-of-scope flag (flagged: the image is unlike "
    "the model's training data; about 1% of in-distribution images are flagged by design).",
    ["model", "version", "segment", "flagged"],
)
OUT_OF_SCOPE_SHARE = Gauge(
    "sightline_drift_out_of_scope_share",
    "Share of the drift window's results flagged out of scope (published with the PSI, once the "
    "window holds the minimum count).",
    ["model", "version", "segment"],
)
#: Row key of the out-of-scope flag (1.0 flagged, 0.0 not) in a drift window.
OUT_OF_SCOPE = "out_of_scope"
REFERENCE_POSITIVE_RATE = Gauge(
    "sightline_model_reference_positive_rate",
    "Share of positive decisions on the model's validation split (baseline for positive-rate shift).",
    ["model", "version"],
)


def ks_statistic(
    values: NDArray[np.float64], cdf_x: NDArray[np.float64], cdf_p: NDArray[np.float64]
) -> float:
    """Two-sided one-sample KS statistic ``max(D+, D-)`` against a piecewise-linear CDF.

    The same arithmetic as ``scipy.stats.kstest`` (sorted values, ``i/n - F(x_i)`` and
    ``F(x_i) - (i-1)/n``), so the figures match it exactly without a scipy dependency.
    """
    x = np.sort(np.asarray(values, np.float64))
    n = x.size
    cdf = np.interp(x, cdf_x, cdf_p, left=0.0, right=1.0)
    d_plus = np.max(np.arange(1.0, n + 1) / n - cdf)
    d_minus = np.max(cdf - np.arange(0.0, n) / n)
    return float(max(d_plus, d_minus))


@dataclass(frozen=True)
class FeatureReference:
    """One feature's reference: PSI bin cut points with their reference mass, and a CDF."""

    cuts: NDArray[np.float64]  # bin j is (cuts[j-1], cuts[j]]; bin 0 is x <= cuts[0]; last is x > cuts[-1]
    mass: NDArray[np.float64]  # len(cuts) + 1, sums to 1
    cdf_x: NDArray[np.float64]
    cdf_p: NDArray[np.float64]

    def proportions(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        idx = np.searchsorted(self.cuts, values, side="left")
        counts = np.bincount(idx, minlength=len(self.mass)).astype(np.float64)
        shares: NDArray[np.float64] = counts / max(1.0, counts.sum())
        return shares

    def psi(self, values: NDArray[np.float64]) -> float:
        """Population Stability Index of ``values`` against this reference."""
        actual = np.maximum(self.proportions(values), EPS)
        expected = np.maximum(self.mass, EPS)
        return float(np.sum((actual - expected) * np.log(actual / expected)))

    def ks(self, values: NDArray[np.float64]) -> float:
        """One-sample KS statistic against the reference CDF (linear between quantiles)."""
        if len(self.cdf_x) < 2 or self.cdf_x[0] == self.cdf_x[-1]:
            # A constant reference: the share of values that differ from it.
            return float(np.mean(values != self.cdf_x[0])) if len(values) else 0.0
        return ks_statistic(values, self.cdf_x, self.cdf_p)

    def share_above(self, threshold: float) -> float:
        """Reference probability of a value >= ``threshold``."""
        return float(1.0 - np.interp(threshold, self.cdf_x, self.cdf_p, left=0.0, right=1.0))

    @classmethod
    def from_quantiles(cls, quantiles: Mapping[str, float]) -> FeatureReference:
        """From the manifest's ``{"0": v, "0.05": v, ...}`` summary (levels must include 0 and 1)."""
        levels = np.asarray([float(k) for k in quantiles], np.float64)
        values = np.asarray(list(quantiles.values()), np.float64)
        order = np.argsort(levels)
        levels, values = levels[order], values[order]
        values = np.maximum.accumulate(values)
        lo, hi = values[0], values[-1]
        interior = [float(np.interp(p, levels, values)) for p in BIN_LEVELS]
        cuts = np.unique(np.asarray([np.nextafter(lo, -np.inf), *interior, hi], np.float64))

        def cdf(x: float) -> float:
            # P(X <= x) from the quantile summary; at a tied value, the highest level reaching it.
            if x < lo:
                return 0.0
            if x >= hi:
                return 1.0
            tied = levels[values == x]
            return float(tied.max()) if len(tied) else float(np.interp(x, values, levels))

        cum = np.asarray([cdf(float(c)) for c in cuts])
        mass = np.diff(np.concatenate([[0.0], cum, [1.0]]))
        return cls(cuts, np.clip(mass, 0.0, 1.0), values, levels)

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> FeatureReference:
        """From raw reference values (tests, or a reference rebuilt from stored studies)."""
        arr = np.sort(np.asarray(list(samples), np.float64))
        if arr.size == 0:
            raise ValueError("empty reference sample")
        levels = (0.0, 0.01, *BIN_LEVELS, 0.99, 1.0)
        summary = {f"{p:g}": float(np.quantile(arr, p)) for p in levels}
        ref = cls.from_quantiles(summary)
        idx = np.searchsorted(ref.cuts, arr, side="left")
        mass = np.bincount(idx, minlength=len(ref.mass)).astype(np.float64) / arr.size
        return cls(ref.cuts, mass, ref.cdf_x, ref.cdf_p)


@dataclass(frozen=True)
class Reference:
    """Reference distributions of one model version: image statistics and the score."""

    features: dict[str, FeatureReference]
    positive_rate: float | None = None

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> Reference:
        """From ``manifest.reference_distribution`` (``image_stats.<name>.quantiles``, ``score``)."""
        dist = manifest.reference_distribution
        features: dict[str, FeatureReference] = {}
        for name, summary in (dist.get("image_stats") or {}).items():
            if isinstance(summary, dict) and "quantiles" in summary:
                features[name] = FeatureReference.from_quantiles(summary["quantiles"])
        positive_rate = None
        score = dist.get("score")
        if isinstance(score, dict) and "quantiles" in score:
            features[SCORE] = FeatureReference.from_quantiles(score["quantiles"])
            positive_rate = _share_above(score.get("histogram"), manifest.threshold)
            if positive_rate is None:
                positive_rate = features[SCORE].share_above(manifest.threshold)
        return cls(features, positive_rate)

    @classmethod
    def from_samples(
        cls, samples: Mapping[str, Iterable[float]], threshold: float | None = None
    ) -> Reference:
        features = {k: FeatureReference.from_samples(v) for k, v in samples.items()}
        rate = None
        if threshold is not None and SCORE in samples:
            scores = np.asarray(list(samples[SCORE]), np.float64)
            rate = float(np.mean(scores >= threshold))
        return cls(features, rate)


def _share_above(histogram: Any, threshold: float) -> float | None:
    """Share of a ``{"edges", "counts"}`` histogram at or above ``threshold`` (uniform within bins)."""
    if not isinstance(histogram, dict) or not histogram.get("counts"):
        return None
    edges = np.asarray(histogram["edges"], np.float64)
    counts = np.asarray(histogram["counts"], np.float64)
    if len(edges) != len(counts) + 1 or counts.sum() <= 0:
        return None
    widths = np.maximum(edges[1:] - edges[:-1], 1e-12)
    above = np.clip((edges[1:] - threshold) / widths, 0.0, 1.0)
    return float((counts * above).sum() / counts.sum())


@dataclass
class _Window:
    rows: deque[dict[str, float]]
    since_update: int = 0


@dataclass
class _Model:
    reference: Reference
    windows: dict[str, _Window] = field(default_factory=dict)


class DriftMonitor:
    """Sliding-window drift per model version and segment, published as Prometheus gauges.

    One instance per process (the gateway). ``observe`` is cheap: drift is recomputed every
    ``every`` observations of a window once it holds ``min_count``. Thread-safe.
    """

    def __init__(
        self,
        *,
        window: int = DEFAULT_WINDOW,
        min_count: int = DEFAULT_MIN_COUNT,
        every: int = 25,
        threshold: float = DEFAULT_PSI_THRESHOLD,
        max_segments: int = 32,
        observations_file: Path | None = None,
    ) -> None:
        if not 0 < min_count <= window:
            raise ValueError("need 0 < min_count <= window")
        self.window = window
        self.min_count = min_count
        self.every = max(1, every)
        self.threshold = threshold
        self.max_segments = max_segments
        self.observations_file = observations_file
        self._models: dict[tuple[str, str], _Model] = {}
        self._lock = threading.Lock()

    def register(self, manifest: ModelManifest, reference: Reference | None = None) -> None:
        """Track a model version against its manifest's reference (or an explicit one)."""
        ref = reference or Reference.from_manifest(manifest)
        self.register_reference(manifest.name, manifest.version, ref)

    def register_reference(self, model: str, version: int | str, reference: Reference) -> None:
        key = (model, str(version))
        with self._lock:
            self._models[key] = _Model(reference)
        if reference.positive_rate is not None:
            REFERENCE_POSITIVE_RATE.labels(model, str(version)).set(reference.positive_rate)

    def _segment(self, model: _Model, segment: str | None) -> str | None:
        if segment is None:
            return None
        if not _SEGMENT_RE.match(segment):
            return OTHER
        if segment not in model.windows and len(model.windows) > self.max_segments:
            return OTHER
        return segment

    def observe(
        self,
        model: str,
        version: int | str,
        stats: Mapping[str, float],
        score: float,
        decision: bool,
        segment: str | None = None,
        out_of_scope: bool | None = None,
    ) -> None:
        """Record one study's image statistics, calibrated score, decision and out-of-scope flag.

        ``segment`` is a coarse site/device label (letters, digits, ``._-``), never an identifier.
        Unknown model versions still count in the score and decision metrics; drift needs
        :meth:`register` first. ``out_of_scope`` (None: the model has no such score) is counted
        per segment and its share over the window published beside the PSI: a site whose images
        the model was not trained for shows both.
        """
        version = str(version)
        MODEL_SCORE.labels(model, version).observe(score)
        MODEL_DECISIONS.labels(model, version, "positive" if decision else "negative").inc()
        row = {k: float(v) for k, v in stats.items()} | {SCORE: float(score)}
        if out_of_scope is not None:
            row[OUT_OF_SCOPE] = 1.0 if out_of_scope else 0.0
        with self._lock:
            entry = self._models.get((model, version))
            if entry is None:
                if out_of_scope is not None:
                    OUT_OF_SCOPE_RESULTS.labels(model, version, ALL, str(out_of_scope).lower()).inc()
                return
            seg = self._segment(entry, segment)
            if out_of_scope is not None:
                OUT_OF_SCOPE_RESULTS.labels(
                    model, version, seg if seg is not None else ALL, str(out_of_scope).lower()
                ).inc()
            due = [self._push(entry, ALL, row)]
            if seg is not None and seg != ALL:
                due.append(self._push(entry, seg, row))
            results = [
                (name, self._compute(entry.reference, win), out_of_scope_share(win))
                for name, win in due
                if win is not None
            ]
        for name, (psi, ks), share in results:
            for feature, value in psi.items():
                DRIFT_PSI.labels(model, version, feature, name).set(value)
                DRIFT_KS.labels(model, version, feature, name).set(ks[feature])
            if share is not None:
                OUT_OF_SCOPE_SHARE.labels(model, version, name).set(share)
        if self.observations_file is not None:
            self._append(model, version, row, decision, segment)

    def _push(
        self, entry: _Model, name: str, row: dict[str, float]
    ) -> tuple[str, list[dict[str, float]] | None]:
        win = entry.windows.get(name)
        if win is None:
            win = entry.windows[name] = _Window(deque(maxlen=self.window))
        win.rows.append(row)
        win.since_update += 1
        if len(win.rows) >= self.min_count and win.since_update >= self.every:
            win.since_update = 0
            return name, list(win.rows)
        return name, None

    def _compute(
        self, reference: Reference, rows: list[dict[str, float]]
    ) -> tuple[dict[str, float], dict[str, float]]:
        return drift_of(reference, rows)

    def window_sizes(self, model: str, version: int | str) -> dict[str, int]:
        entry = self._models.get((model, str(version)))
        return {k: len(w.rows) for k, w in entry.windows.items()} if entry else {}

    def current(self, model: str, version: int | str, segment: str = ALL) -> dict[str, float]:
        """PSI per feature over the current window (empty below ``min_count``)."""
        with self._lock:
            entry = self._models.get((model, str(version)))
            if entry is None or segment not in entry.windows:
                return {}
            rows = list(entry.windows[segment].rows)
            reference = entry.reference
        if len(rows) < self.min_count:
            return {}
        return drift_of(reference, rows)[0]

    def current_out_of_scope_share(self, model: str, version: int | str, segment: str = ALL) -> float | None:
        """Share of the current window flagged out of scope (None below ``min_count`` or unflagged)."""
        with self._lock:
            entry = self._models.get((model, str(version)))
            if entry is None or segment not in entry.windows:
                return None
            rows = list(entry.windows[segment].rows)
        return out_of_scope_share(rows) if len(rows) >= self.min_count else None

    def drifted(self, model: str, version: int | str, segment: str = ALL) -> dict[str, float]:
        """Features whose PSI is above the threshold now."""
        return {k: v for k, v in self.current(model, version, segment).items() if v > self.threshold}

    def _append(
        self, model: str, version: str, row: dict[str, float], decision: bool, segment: str | None
    ) -> None:
        assert self.observations_file is not None
        record = {
            "ts": round(time.time(), 3),
            "model": model,
            "version": version,
            "segment": segment,
            "decision": bool(decision),
            **row,
        }
        data = (json.dumps(record) + "\n").encode()
        self.observations_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.observations_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def out_of_scope_share(rows: list[dict[str, float]]) -> float | None:
    """Share of the rows flagged out of scope (None when no row carries the flag)."""
    flags = [r[OUT_OF_SCOPE] for r in rows if OUT_OF_SCOPE in r]
    return float(np.mean(flags)) if flags else None


def drift_of(reference: Reference, rows: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """PSI and KS statistic per reference feature present in ``rows``."""
    psi: dict[str, float] = {}
    ks: dict[str, float] = {}
    for name, ref in reference.features.items():
        values = np.asarray([r[name] for r in rows if name in r and math.isfinite(r[name])], np.float64)
        if values.size == 0:
            continue
        psi[name] = ref.psi(values)
        ks[name] = ref.ks(values)
    return psi, ks


def read_observations(path: Path) -> list[dict[str, Any]]:
    """Observations written by a monitor with ``observations_file`` (one JSON object per line)."""
    rows = []
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows
