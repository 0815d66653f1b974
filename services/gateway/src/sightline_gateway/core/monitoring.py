"""Real-world performance as Prometheus gauges, per model version and tenant, over a rolling window.

Site and subgroup (sex, age band) breakdowns stay in ``sightline monitor report``: as labels they
would multiply series by every site and band for counts too small to alert on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge
from sightline_common.manifest import ModelManifest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.performance import Case, Estimate, calibration_gap, group_by, performance
from sightline_gateway.db.engine import UNREACHABLE
from sightline_gateway.db.models import utcnow
from sightline_gateway.db.outcomes import load_cases

log = logging.getLogger(__name__)

OUTCOMES = Counter(
    "sightline_outcomes",
    "Confirmed outcomes recorded (a correction counts again)",
    ["model", "version", "label"],
)
ESTIMATE = Gauge(
    "sightline_realworld_estimate",
    "Real-world performance over confirmed outcomes in the rolling window, with Wilson 95% bounds",
    ["model", "version", "tenant", "metric", "bound"],
)
CASES = Gauge(
    "sightline_realworld_cases",
    "Counts behind the real-world estimates: results, with_outcome, confirmed_positive, "
    "confirmed_negative, referred_due (referred long enough ago to expect an outcome), backlog "
    "(of those, still without one)",
    ["model", "version", "tenant", "kind"],
)
CALIBRATION_GAP = Gauge(
    "sightline_realworld_calibration_gap",
    "Largest |observed - predicted| malignancy rate over score bins with enough confirmed cases",
    ["model", "version", "tenant"],
)
CLAIMED = Gauge(
    "sightline_model_claimed",
    "The model card's test-set performance (the claim real-world estimates are held to)",
    ["model", "version", "metric"],
)
METRICS = ("sensitivity", "specificity", "ppv", "npv")


def _bounds(estimate: Estimate) -> dict[str, float]:
    values = {"point": estimate.value, "lower": estimate.low, "upper": estimate.high}
    return {k: v for k, v in values.items() if v is not None}


def publish_claims(manifest: ModelManifest) -> None:
    """The model card's claimed sensitivity and specificity (``metrics.test``)."""
    test = manifest.metrics.get("test") or {}
    for metric in ("sensitivity", "specificity"):
        value = test.get(metric)
        value = value.get("value") if isinstance(value, dict) else value
        if isinstance(value, int | float):
            CLAIMED.labels(manifest.name, str(manifest.version), metric).set(float(value))


def publish(cases: Sequence[Case], now: datetime, expect_after: timedelta, min_bin: int = 30) -> int:
    """Set the gauges from ``cases`` (one window); returns the number of groups published."""
    ESTIMATE.clear()
    CASES.clear()
    CALIBRATION_GAP.clear()
    groups = group_by(cases, ("model", "version", "tenant"))
    for key, members in groups.items():
        perf = performance(members)
        for metric in METRICS:
            for bound, value in _bounds(getattr(perf.confirmed, metric)).items():
                ESTIMATE.labels(*key, metric, bound).set(value)
        due = [c for c in members if c.refer and c.at <= now - expect_after]
        counts = {
            "results": perf.results,
            "with_outcome": perf.with_outcome,
            "confirmed_positive": perf.confirmed_positives,
            "confirmed_negative": perf.confirmed.tn + perf.confirmed.fp,
            "referred_due": len(due),
            "backlog": sum(c.truth is None for c in due),
        }
        for kind, count in counts.items():
            CASES.labels(*key, kind).set(count)
        gap = calibration_gap(perf.calibration, min_bin)
        if gap is not None:
            CALIBRATION_GAP.labels(*key).set(gap)
    return len(groups)


async def run_outcome_metrics(
    sessions: async_sessionmaker[AsyncSession],
    manifests: Callable[[], Iterable[ModelManifest]],
    stop: asyncio.Event,
    *,
    window: timedelta,
    expect_after: timedelta,
    interval_s: float,
) -> None:
    """Recompute the gauges from the database every ``interval_s`` (every replica agrees: same rows)."""
    while not stop.is_set():
        for current in manifests():
            publish_claims(current)
        now = utcnow()
        try:
            cases = await load_cases(sessions, now - window, now)
            groups = publish(cases, now, expect_after)
            log.debug("real-world metrics: %d groups from %d results", groups, len(cases))
        except UNREACHABLE as exc:  # the database is down: keep the last values, try again later
            log.warning("real-world metrics not refreshed: %s", type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
