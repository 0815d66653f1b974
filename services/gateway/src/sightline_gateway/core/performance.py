"""Real-world performance from confirmed outcomes: pure functions over cases.

A :class:`Case` is one study's result (score, decision) with its confirmed outcome, if any, and
the latest clinician verdict, if any. Every estimate carries its count and a Wilson 95% interval.
Benign lesions are biopsied less often than suspicious ones (verification bias), so each summary
also states the share of results with an outcome and a second estimate that uses clinician
verdicts as a proxy truth for the unconfirmed results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

Z95 = 1.959963984540054
#: Score bins of the calibration table (observed vs predicted malignancy rate).
CALIBRATION_EDGES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
GROUP_KEYS = ("model", "version", "tenant", "site", "sex", "age_band")


@dataclass(frozen=True)
class Case:
    """One result: who and what it is about, what the model said, what turned out to be true."""

    model: str
    version: str
    tenant: str
    site: str
    sex: str
    age_band: str
    at: datetime
    probability: float
    refer: bool
    truth: bool | None = None  # confirmed outcome (True: the positive label), None: no outcome
    verdict: str | None = None  # latest clinician verdict: agree / disagree / uncertain


@dataclass(frozen=True)
class Estimate:
    """A proportion ``k / n`` with its Wilson interval (``None`` when ``n`` is 0)."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None


def wilson(k: int, n: int, z: float = Z95) -> Estimate:
    """Wilson score interval of ``k`` successes in ``n`` trials."""
    if n <= 0:
        return Estimate(k, n, None, None, None)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval contains p; min/max keep rounding at p = 0 or 1 from putting it outside.
    return Estimate(k, n, p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @property
    def sensitivity(self) -> Estimate:
        return wilson(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> Estimate:
        return wilson(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> Estimate:
        return wilson(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> Estimate:
        return wilson(self.tn, self.tn + self.fn)


def confusion(pairs: Iterable[tuple[bool, bool]]) -> Confusion:
    """The confusion matrix of (truth, decision) pairs."""
    tp = fp = tn = fn = 0
    for truth, decision in pairs:
        if truth and decision:
            tp += 1
        elif truth:
            fn += 1
        elif decision:
            fp += 1
        else:
            tn += 1
    return Confusion(tp, fp, tn, fn)


def proxy_truth(case: Case) -> bool | None:
    """The confirmed truth, else the clinician's reading of the decision (agree keeps it,
    disagree flips it, uncertain or no verdict: unknown)."""
    if case.truth is not None:
        return case.truth
    if case.verdict == "agree":
        return case.refer
    if case.verdict == "disagree":
        return not case.refer
    return None


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    n: int
    mean_predicted: float | None
    observed: Estimate


def calibration(cases: Sequence[Case], edges: Sequence[float] = CALIBRATION_EDGES) -> list[CalibrationBin]:
    """Observed positive rate vs mean predicted probability per score bin (confirmed cases only).

    Bins are ``[low, high)`` except the last, which includes 1.0.
    """
    bins = []
    last = len(edges) - 2
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        inside = [
            c
            for c in cases
            if c.truth is not None and (lo <= c.probability < hi or (i == last and c.probability == hi))
        ]
        mean = sum(c.probability for c in inside) / len(inside) if inside else None
        bins.append(
            CalibrationBin(lo, hi, len(inside), mean, wilson(sum(bool(c.truth) for c in inside), len(inside)))
        )
    return bins


def calibration_gap(bins: Sequence[CalibrationBin], min_n: int = 10) -> float | None:
    """The largest |observed - predicted| over bins with at least ``min_n`` confirmed cases."""
    gaps = [
        abs(b.observed.value - b.mean_predicted)
        for b in bins
        if b.n >= min_n and b.observed.value is not None and b.mean_predicted is not None
    ]
    return max(gaps) if gaps else None


@dataclass(frozen=True)
class Performance:
    """One group's real-world performance over one window."""

    results: int
    with_outcome: int
    confirmed: Confusion
    with_proxy: Confusion
    calibration: list[CalibrationBin] = field(default_factory=list)

    @property
    def verified_share(self) -> Estimate:
        """The share of results with a confirmed outcome: low means the estimate leans on few cases."""
        return wilson(self.with_outcome, self.results)

    @property
    def confirmed_positives(self) -> int:
        return self.confirmed.tp + self.confirmed.fn


def performance(cases: Sequence[Case], edges: Sequence[float] = CALIBRATION_EDGES) -> Performance:
    """Confusion matrices over confirmed cases and with verdicts as proxy, and calibration."""
    confirmed = [c for c in cases if c.truth is not None]
    proxied = [(t, c.refer) for c in cases if (t := proxy_truth(c)) is not None]
    return Performance(
        results=len(cases),
        with_outcome=len(confirmed),
        confirmed=confusion((bool(c.truth), c.refer) for c in confirmed),
        with_proxy=confusion(proxied),
        calibration=calibration(confirmed, edges),
    )


def group_by(cases: Iterable[Case], keys: Sequence[str]) -> dict[tuple[str, ...], list[Case]]:
    """Cases grouped by the named attributes (``GROUP_KEYS``), in a stable order."""
    groups: dict[tuple[str, ...], list[Case]] = {}
    for case in cases:
        groups.setdefault(tuple(str(getattr(case, k)) for k in keys), []).append(case)
    return dict(sorted(groups.items()))


#: The gauges' group: one series per model version and tenant.
GROUP = ("model", "version", "tenant")


@dataclass(frozen=True)
class GroupCounts:
    """A group's results in the window and, of them, those referred before ``due_before``."""

    results: int = 0
    referred_due: int = 0


@dataclass(frozen=True)
class WindowSummary:
    """What the gauges need from one window: every group's counts, and only the results with a
    confirmed outcome as cases (a window holds far more results than outcomes: loading every
    result each refresh made its cost grow with the window, issue 13's soak)."""

    counts: dict[tuple[str, ...], GroupCounts]
    confirmed: list[Case]
    due_before: datetime


def summarise(cases: Sequence[Case], due_before: datetime) -> WindowSummary:
    """The summary of a window given as every case (what the database query computes)."""
    counts: dict[tuple[str, ...], GroupCounts] = {}
    for key, members in group_by(cases, GROUP).items():
        due = sum(c.refer and c.at <= due_before for c in members)
        counts[key] = GroupCounts(results=len(members), referred_due=due)
    return WindowSummary(counts, [c for c in cases if c.truth is not None], due_before)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    performance: Performance


def rolling(
    cases: Sequence[Case],
    start: datetime,
    end: datetime,
    width: timedelta,
    step: timedelta,
    summarise: Callable[[Sequence[Case]], Performance] = performance,
) -> list[Window]:
    """Performance over windows ``[t - width, t)`` for ``t`` from ``start + width`` to ``end`` by ``step``
    (cases are placed by their result's time)."""
    windows = []
    t = start + width
    while t <= end:
        inside = [c for c in cases if t - width <= c.at < t]
        windows.append(Window(t - width, t, summarise(inside)))
        t += step
    return windows
