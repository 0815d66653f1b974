"""Issue 13: graceful shutdown (SIGTERM runs the app's shutdown): stop claiming, finish the job in
hand within the grace period or hand its lease back; never lose a study, never two results."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sightline_gateway.db.engine import make_engine, make_sessions
from sightline_gateway.db.models import Job, Result
from sqlalchemy import func, select

from tests.unit.gateway.gateway_fixtures import harness, token


def _db(tmp_path: Path) -> tuple[list[tuple[str, str | None]], int]:
    async def read() -> tuple[list[tuple[str, str | None]], int]:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
        try:
            async with make_sessions(engine)() as session:
                jobs = [(j.status, j.lease_owner) for j in (await session.scalars(select(Job))).all()]
                results = int(await session.scalar(select(func.count()).select_from(Result)) or 0)
            return jobs, results
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _shut_down_while_running(tmp_path: Path, delay_s: float, grace_s: float) -> str:
    with harness(tmp_path, shutdown_grace_s=grace_s) as h:
        h.preprocess.delay_s = delay_s
        study_id = h.submit().json()["id"]
        deadline = time.monotonic() + 5
        while h.preprocess.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.preprocess.calls == 1  # the job is in hand
        started = time.monotonic()
    assert time.monotonic() - started < grace_s + 5  # leaving the block ran the shutdown
    return study_id


def test_shutdown_finishes_the_job_in_hand_within_the_grace_period(tmp_path: Path) -> None:
    _shut_down_while_running(tmp_path, delay_s=0.5, grace_s=10)
    jobs, results = _db(tmp_path)
    assert jobs == [("succeeded", None)] and results == 1


def test_shutdown_hands_the_lease_back_when_the_grace_period_ends_and_another_gateway_finishes(
    tmp_path: Path,
) -> None:
    # Before: the job stayed "running" under the dead worker's lease for job_lease_s (120 s).
    study_id = _shut_down_while_running(tmp_path, delay_s=30, grace_s=0.3)
    jobs, results = _db(tmp_path)
    assert jobs == [("queued", None)] and results == 0
    with harness(tmp_path) as h:  # the next replica (same database and object store)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if h.client.get(f"/v1/studies/{study_id}", headers=token()).json()["status"] == "completed":
                break
            time.sleep(0.05)
    jobs, results = _db(tmp_path)
    assert jobs == [("succeeded", None)] and results == 1
