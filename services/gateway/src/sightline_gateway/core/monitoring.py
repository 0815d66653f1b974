"""Real-world performance as Prometheus gauges, per model version and tenant, over a rolling window.

Site and subgroup (sex, age band) breakdowns stay in ``sightline monitor report``: as labels they
would multiply series by every site and band for counts too small to alert on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta

from prometheus_client import Counter, Gauge
from sightline_common.manifest import ModelManifest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.performance import (
    GROUP,
    Estimate,
    WindowSummary,
    calibration_gap,
    group_by,
    performance,
)
from sightline_gateway.db.engine import UNREACHABLE
from sightline_gateway.db.models import utcnow
from sightline_gateway.db.outcomes import load_window

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


def publish(window: WindowSummary, min_bin: int = 30) -> int:
    """Set the gauges from one window's summary; returns the number of groups published."""
    ESTIMATE.clear()
    CASES.clear()
    CALIBRATION_GAP.clear()
    confirmed = group_by(window.confirmed, GROUP)
    for key, group in sorted(window.counts.items()):
        members = confirmed.get(key, [])
        perf = performance(members)
        for metric in METRICS:
            for bound, value in _bounds(getattr(perf.confirmed, metric)).items():
                ESTIMATE.labels(*key, metric, bound).set(value)
        answered = sum(c.refer and c.at <= window.due_before for c in members)
        counts = {
            "results": group.results,
            "with_outcome": perf.with_outcome,
            "confirmed_positive": perf.confirmed_positives,
            "confirmed_negative": perf.confirmed.tn + perf.confirmed.fp,
            "referred_due": group.referred_due,
            "backlog": group.referred_due - answered,
        }
        for kind, count in counts.items():
            CASES.labels(*key, kind).set(count)
        gap = calibration_gap(perf.calibration, min_bin)
        if gap is not None:
            CALIBRATION_GAP.labels(*key).set(gap)
    return len(window.counts)


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
            summary = await load_window(sessions, now - window, now, due_before=now - expect_after)
            groups = publish(summary)
            log.debug("real-world metrics: %d groups, %d confirmed", groups, len(summary.confirmed))
        except UNREACHABLE as exc:  # the database is down: keep the last values, try again later
            log.warning("real-world metrics not refreshed: %s", type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
