"""A generated gateway database for the monitoring report: studies, results, outcomes, verdicts.

Synthetic only. Scores follow a calibrated model; from ``drift_from`` on, hospital-b's site
``east`` sends images on which the model misses most malignant lesions (the issue's held-out site).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from sightline_gateway.db.engine import make_engine, make_sessions, migrate
from sightline_gateway.db.models import Outcome, Result, Review, Study, Tenant

START = datetime(2026, 3, 1, tzinfo=UTC)
THRESHOLD = 0.3


@dataclass(frozen=True)
class Truth:
    """What the generator decided, for an offline computation to compare with."""

    tenant: str
    site: str
    refer: bool
    malignant: bool
    confirmed: bool
    at: datetime


async def _generate(url: str, n: int, days: int, seed: int, drift_from: int) -> list[Truth]:
    rng = np.random.default_rng(seed)
    engine = make_engine(url)
    await migrate(engine)
    sessions = make_sessions(engine)
    truths: list[Truth] = []
    async with sessions() as session, session.begin():
        for tenant in ("hospital-a", "hospital-b"):
            session.add(Tenant(id=tenant, name=tenant))
        await session.flush()
        for i in range(n):
            at = START + timedelta(days=float(rng.uniform(0, days)))
            tenant = "hospital-b" if i % 3 == 0 else "hospital-a"
            site = ("east", "west")[i % 2] if tenant == "hospital-b" else "north"
            malignant = bool(rng.uniform() < 0.2)
            shifted = tenant == "hospital-b" and site == "east" and at >= START + timedelta(days=drift_from)
            mean = (0.25 if shifted else 0.65) if malignant else 0.12
            p = float(np.clip(rng.normal(mean, 0.15), 0.001, 0.999))
            refer = p >= THRESHOLD
            confirmed = bool(rng.uniform() < (0.85 if refer else 0.35))
            sid = str(uuid.uuid4())
            session.add(
                Study(
                    id=sid, tenant_id=tenant, submitted_by="gen", status="done", created_at=at, updated_at=at
                )
            )
            await session.flush()
            session.add(
                Result(
                    id=str(uuid.uuid4()),
                    study_id=sid,
                    tenant_id=tenant,
                    model_name="derm-cnn",
                    model_version=1,
                    model_sha256="0" * 64,
                    placeholder=False,
                    probability=p,
                    threshold=THRESHOLD,
                    refer=refer,
                    status="final",
                    created_at=at,
                )
            )
            if rng.uniform() < 0.6:
                agree = rng.uniform() < (0.9 if refer == malignant else 0.4)
                verdict = "agree" if agree else "disagree"
                session.add(
                    Review(
                        id=str(uuid.uuid4()),
                        study_id=sid,
                        tenant_id=tenant,
                        reviewer="dr",
                        verdict=verdict,
                        created_at=at,
                    )
                )
            if confirmed:
                if rng.uniform() < 0.1:  # a correction: the first report said the opposite
                    session.add(_outcome(sid, tenant, site, not malignant, at + timedelta(days=20)))
                session.add(_outcome(sid, tenant, site, malignant, at + timedelta(days=30)))
            truths.append(Truth(tenant, site, refer, malignant, confirmed, at))
    await engine.dispose()
    return truths


def _outcome(study_id: str, tenant: str, site: str, malignant: bool, at: datetime) -> Outcome:
    return Outcome(
        id=str(uuid.uuid4()), study_id=study_id, tenant_id=tenant, model_name="derm-cnn", model_version=1,
        code_system="snomed", code="372244006" if malignant else "400096001",
        label="malignant" if malignant else "benign", positive=malignant, method="histopathology",
        diagnosed_on=date(2026, 1, 1), site=site, sex=("F", "M")[hash(study_id) % 2], age_band="45-59",
        source="json", reported_by="gen", supersedes=None, created_at=at,
    )  # fmt: skip


def generate(path: Path, n: int = 1500, days: int = 240, seed: int = 7, drift_from: int = 150) -> list[Truth]:
    """Write a gateway SQLite database at ``path``; the truths it holds, one per result."""
    return asyncio.run(_generate(f"sqlite+aiosqlite:///{path}", n, days, seed, drift_from))
