"""Issue 15: a sync study's job runs in the process that received it (``core.direct``), without the
queue's claim and the waiting request's read, and keeps every guarantee of a queued job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.engine import make_engine, make_sessions
from sightline_gateway.db.jobs import JobQueue
from sightline_gateway.db.models import Job
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.unit.gateway.gateway_fixtures import harness, jobs_and_results, phi_dicom

#: The worker's claim: the conditional update that takes a due job's lease.
CLAIM = "UPDATE jobs SET status=?, attempts=(jobs.attempts + ?)"


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process runs meanwhile."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _jobs_and_results(tmp_path: Path) -> tuple[list[tuple[str, int]], int]:
    jobs, results = jobs_and_results(tmp_path)
    return [(j.status, j.attempts) for j in jobs], results


@pytest.mark.parametrize("direct", [8, 0], ids=["handed-off", "queued"])
def test_a_sync_study_runs_without_a_claim_when_a_slot_is_free(tmp_path: Path, direct: int) -> None:
    with harness(tmp_path, sync_direct_jobs=direct) as h:
        h.submit(mode="sync")  # warm-up: pools open, manifests read
        with statements() as seen:
            r = h.submit(mode="sync")
        assert r.status_code == 200, r.text
        assert r.json()["probability"] is not None
    claims = [s for s in seen if s.startswith(CLAIM)]
    assert (len(claims) == 0) == (direct > 0), claims
    jobs, results = _jobs_and_results(tmp_path)
    assert jobs == [("succeeded", 1)] * 2 and results == 2


def test_sync_studies_beyond_the_free_slots_go_through_the_queue_and_all_complete(tmp_path: Path) -> None:
    with harness(tmp_path, sync_direct_jobs=1, worker_concurrency=2) as h:
        h.preprocess.delay_s = 0.3  # the one slot is busy while the others arrive
        with statements() as seen, ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: h.submit(phi_dicom(seed=i), mode="sync"), range(4)))
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert len({a.headers["Location"] for a in answers}) == 4
        assert h.client.app.state.gateway.pipeline.direct.reserve()  # no slot kept by a finished run
    assert any(s.startswith(CLAIM) for s in seen)  # some went through the queue
    jobs, results = _jobs_and_results(tmp_path)
    assert sorted(jobs) == [("succeeded", 1)] * 4 and results == 4


def test_an_idempotent_sync_replay_keeps_no_slot(tmp_path: Path) -> None:
    with harness(tmp_path, sync_direct_jobs=1) as h:
        key, study = {"Idempotency-Key": "replay-1"}, phi_dicom(seed=3)
        first, again = h.submit(study, headers=key, mode="sync"), h.submit(study, headers=key, mode="sync")
        assert first.status_code == again.status_code == 200
        assert first.headers["Location"] == again.headers["Location"]
        with statements() as seen:
            assert h.submit(mode="sync").status_code == 200
    assert not [s for s in seen if s.startswith(CLAIM)]  # the slot was free again


def test_a_handed_off_job_is_leased_so_only_a_lapsed_lease_lets_another_replica_take_it(
    tmp_path: Path,
) -> None:
    """The process that runs a handed-off job may die: its lease, stored with the study, is what
    lets another replica take the job then, and only then."""
    with harness(tmp_path, job_lease_s=1.5, sync_timeout_s=0.3, deid_retry_budget_s=0.2) as h:
        h.preprocess.delay_s = 30  # the run in hand never ends during this test
        r = h.submit(mode="sync")
        assert r.status_code == 202 and r.json()["status"] == "running"  # still running here

        async def other_replica_claims() -> Job | None:
            engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
            try:
                sessions = make_sessions(engine)
                return await JobQueue(sessions, AuditLog(sessions), lease_s=60).claim()
            finally:
                await engine.dispose()

        assert asyncio.run(other_replica_claims()) is None  # leased to the process running it
        assert h.preprocess.calls == 1
        deadline = time.monotonic() + 10
        while h.preprocess.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The lease lapsed (as if the process had died): a worker took the job again.
        assert h.preprocess.calls == 2
        assert _jobs_and_results(tmp_path)[0] == [("running", 2)]
