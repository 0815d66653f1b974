"""The outcome gauges' window read (``load_window``) against SQLite and PostgreSQL.

The gauge refresh counts results in the database and loads only the results that have an outcome
(issue 13: loading every result of the 90-day window each minute made the gateway's memory and
latency grow with the window). Its gauges must be exactly those computed from every case
(``load_cases``), with the cases the cheap read skips: superseded outcomes, an outcome judged
with another model's labels, referrals not yet due, results outside the window.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sightline_gateway.core.monitoring import publish
from sightline_gateway.core.performance import summarise
from sightline_gateway.db.engine import make_sessions
from sightline_gateway.db.models import Outcome, Result, Study, Tenant, utcnow
from sightline_gateway.db.outcomes import load_cases, load_window
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration

WINDOW_DAYS, DUE_DAYS = 90, 14


@pytest.fixture
def engine(db: tuple[AsyncEngine, str | None]) -> AsyncEngine:
    return db[0]


async def fill(engine: AsyncEngine, now: datetime) -> None:
    """Two tenants, two models (both run on every study), results from inside and outside the
    window, referred and not, due and not; outcomes judged with the first model's labels, some
    superseded by a later outcome of the opposite sign."""
    sessions = make_sessions(engine)
    ages = itertools.cycle([1, 5, 20, 40, 80, 100, 3])  # days; 100 is outside the 90-day window
    async with sessions() as session:
        for tenant in ("hospital-a", "hospital-b"):
            session.add(Tenant(id=tenant, name=tenant))
        await session.flush()
        for i in range(60):
            tenant = ("hospital-a", "hospital-b")[i % 2]
            at = now - timedelta(days=next(ages), minutes=i)
            study = Study(id=str(uuid.uuid4()), tenant_id=tenant, submitted_by="test", created_at=at)
            session.add(study)
            await session.flush()
            for position, (model, version) in enumerate((("derm-cnn", 1 + i % 3 // 2), ("derm-b", 1))):
                probability = ((i * 37 + position * 11) % 100) / 100
                session.add(
                    Result(
                        id=str(uuid.uuid4()),
                        study_id=study.id,
                        tenant_id=tenant,
                        model_name=model,
                        position=position,
                        model_version=version,
                        model_sha256="0" * 64,
                        placeholder=False,
                        probability=probability,
                        threshold=0.3,
                        refer=probability >= 0.3,
                        created_at=at,
                    )
                )
            for n in range(0 if i % 4 == 3 else 1 + (i % 5 == 0)):  # none, one, or superseded
                session.add(outcome(study, positive=(i + n) % 3 == 0, at=now - timedelta(hours=50 - n)))
        await session.commit()


def outcome(study: Study, *, positive: bool, at: datetime) -> Outcome:
    return Outcome(
        id=str(uuid.uuid4()),
        study_id=study.id,
        tenant_id=study.tenant_id,
        model_name="derm-cnn",
        model_version=1,
        code_system="snomed",
        code="372244006" if positive else "400010006",
        label="malignant" if positive else "benign",
        positive=positive,
        method="histopathology",
        diagnosed_on=date(2026, 11, 2),
        source="api",
        reported_by="pathology",
        created_at=at,
    )


def gauges() -> dict[tuple[Any, ...], float]:
    wanted = {
        "sightline_realworld_estimate",
        "sightline_realworld_cases",
        "sightline_realworld_calibration_gap",
    }
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in REGISTRY.collect()
        for s in metric.samples
        if s.name in wanted
    }


async def test_the_window_read_publishes_the_gauges_every_case_gives(engine: AsyncEngine) -> None:
    now = utcnow()
    await fill(engine, now)
    sessions = make_sessions(engine)
    since, due_before = now - timedelta(days=WINDOW_DAYS), now - timedelta(days=DUE_DAYS)

    every = await load_cases(sessions, since, now)
    publish(summarise(every, due_before), min_bin=1)
    expected = gauges()
    window = await load_window(sessions, since, now, due_before)
    # (derm-cnn v1, v2, derm-b v1) x two tenants
    assert publish(window, min_bin=1) == len({(c.model, c.version, c.tenant) for c in every}) == 6
    assert gauges() == expected

    # What the cheap read did not load: the results without a confirmed outcome for their model.
    assert len(every) == 104 and sum(g.results for g in window.counts.values()) == 104
    assert len(window.confirmed) == sum(c.truth is not None for c in every) < 52
    # Hand-checkable: one group's backlog is its due referrals that have no outcome.
    group = ("derm-b", "1", "hospital-a")
    due = [c for c in every if (c.model, c.version, c.tenant) == group and c.refer and c.at <= due_before]
    backlog = REGISTRY.get_sample_value(
        "sightline_realworld_cases",
        {"model": "derm-b", "version": "1", "tenant": "hospital-a", "kind": "backlog"},
    )
    assert due and backlog == len(due)  # derm-b's results are never judged by derm-cnn's outcome
