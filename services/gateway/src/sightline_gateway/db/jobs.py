"""The durable job queue: one job per study, claimed under a lease so that one worker runs it.

Every change of a job (claim, checkpoint, retry later, completion, failure) is a conditional or
bulk UPDATE; the study's status follows in the same transaction. A lease that expires (its
worker died) makes the job claimable again; the job resumes after its last checkpoint.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sightline_common.telemetry import current_trace_id, inject_headers
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.models import Delivery, Job, Result, Study, utcnow

log = logging.getLogger(__name__)

SYSTEM = "system"
#: Bulk UPDATEs here go to rows the short-lived session has not loaded (or reloads after): no
#: need for SQLAlchemy to evaluate each WHERE clause against the identity map.
NO_SYNC = {"synchronize_session": False}
PENDING = ("queued", "running")
#: The stage of a job whose study has its result and waits only for the explanation.
BACKFILL = "backfill"


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_s: float


def ended(
    study: Study,
    status: str,
    now: datetime,
    timings: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    """What a commit just stored about ``study``, mirrored on the object in hand (after the
    commit only): a sync request whose job ran in its own process answers from it without
    reading the study again (``Intake.wait``)."""
    study.status, study.updated_at = status, now
    if timings is not None:
        study.stage_timings = timings
    if error is not None:
        study.error_code, study.error_detail = error


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes from aggregates; they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class JobQueue:
    """Claims, checkpoints and ends jobs; ``worker_id`` owns the leases this process takes."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog, *, lease_s: float
    ) -> None:
        self.sessions, self.audit, self.lease_s = sessions, audit, lease_s
        self.worker_id = uuid.uuid4().hex[:16]
        self._claimed: dict[str, Study] = {}  # the study read with each claim, for study_of()

    def new_job(self, study_id: str, *, leased: bool = False) -> Job:
        """A queued job for a new study; it continues the submitting request's trace.

        ``leased``: the job starts claimed by this process (the sync hand-off, ``core.direct``),
        as if a worker here had just claimed it: a crash before it ends leaves the lease to
        expire and another worker claims it, as any claimed job.
        """
        if not leased:
            return Job(
                id=str(uuid.uuid4()),
                study_id=study_id,
                status="queued",
                stage="preprocess",
                state={"traceparent": inject_headers()},
            )
        now = utcnow()
        return Job(
            id=str(uuid.uuid4()),
            study_id=study_id,
            status="running",
            stage="preprocess",
            attempts=1,
            next_attempt_at=now,
            lease_owner=self.worker_id,
            lease_expires_at=now + timedelta(seconds=self.lease_s),
            state={"traceparent": inject_headers()},
            created_at=now,
            updated_at=now,
        )

    async def claim(self, blocked_stages: Collection[str] = ()) -> Job | None:
        """Take one due job under a lease; a conditional UPDATE makes the claim exclusive.

        Jobs waiting at one of ``blocked_stages`` (their dependency is down) are left queued.
        The study is marked running in the same transaction.
        """
        now = utcnow()
        free = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
        if blocked_stages:
            free = and_(free, Job.stage.not_in(list(blocked_stages)))
        async with self.sessions() as session, session.begin():
            due = (
                await session.scalars(
                    select(Job.id)
                    .where(Job.status.in_(PENDING), Job.next_attempt_at <= now, free)
                    .order_by(Job.next_attempt_at)
                    .limit(8)
                )
            ).all()
            for job_id in due:
                claimed = await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status.in_(PENDING), free)
                    .values(
                        status="running",
                        lease_owner=self.worker_id,
                        lease_expires_at=now + timedelta(seconds=self.lease_s),
                        attempts=Job.attempts + 1,
                        updated_at=now,
                    )
                    .execution_options(**NO_SYNC)
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    job = await session.get(Job, job_id, populate_existing=True)
                    assert job is not None
                    if job.stage == BACKFILL:  # the study is completed already
                        return job
                    await session.execute(
                        update(Study)
                        .where(Study.id == job.study_id)
                        .values(status="running", updated_at=now)
                        .execution_options(**NO_SYNC)
                    )
                    study = await session.get(Study, job.study_id, populate_existing=True)
                    if study is not None:
                        self._claimed[job.id] = study
                    return job
        return None

    async def study_of(self, job: Job) -> Study:
        """The job's study: as its claim read it, else from the database."""
        study = self._claimed.pop(job.id, None)
        if study is None:
            async with self.sessions() as session:
                study = await session.get(Study, job.study_id)
        assert study is not None, "a job's study is never deleted"
        return study

    async def checkpoint(
        self, job: Job, study: Study, state: dict[str, Any], timings: dict[str, Any], stage: str
    ) -> None:
        """Persist a finished stage and extend the lease (a crash resumes after this stage)."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == self.worker_id)
                .values(
                    state=state,
                    stage=stage,
                    lease_expires_at=now + timedelta(seconds=self.lease_s),
                    updated_at=now,
                )
                .execution_options(**NO_SYNC)
            )
            await session.execute(
                update(Study)
                .where(Study.id == study.id)
                .values(stage_timings=timings, updated_at=now)
                .execution_options(**NO_SYNC)
            )
        job.state, job.stage, study.stage_timings = state, stage, timings

    async def resume(self, stage: str) -> int:
        """Make the queued jobs waiting at ``stage`` due now (its dependency is back)."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            resumed = await session.execute(
                update(Job)
                .where(Job.status == "queued", Job.stage == stage, Job.next_attempt_at > now)
                .values(next_attempt_at=now)
                .execution_options(**NO_SYNC)
            )
        return int(resumed.rowcount)  # type: ignore[attr-defined]

    async def complete(
        self,
        job: Job,
        study: Study,
        results: Sequence[Result],
        timings: dict[str, Any],
        backfill: dict[str, Any] | None = None,
        delivery: Delivery | None = None,
    ) -> bool:
        """Store the study's results (one per model) and end the job; ``False`` when another
        worker stored them first.

        The results, the job's and study's end and the audit events commit together, so a
        study is completed exactly when every model's result is stored. A worker that lost its
        lease mid-job hits the unique (study, model) and keeps the other's results.
        ``backfill``: an explanation is pending; the job stays queued at stage ``backfill``
        with this state. ``delivery``: the results' delivery to the tenant's PACS, durable from
        the same commit.
        """
        now = utcnow()
        try:
            async with self.audit.transaction() as session:
                session.add_all(results)
                await session.flush()
                if delivery is not None:
                    session.add(delivery)
                await self._finish(session, job, study, "completed", timings, now, backfill)
                for result in results:
                    await self.audit.add(
                        session,
                        actor=SYSTEM,
                        roles=[],
                        tenant_id=study.tenant_id,
                        action="result.create",
                        resource_type="result",
                        resource_id=study.id,
                        trace_id=result.trace_id,
                    )
        except IntegrityError:
            async with self.sessions() as session, session.begin():
                await self._finish(session, job, study, "completed", timings, now)
            ended(study, "completed", now, timings)
            return False
        ended(study, "completed", now, timings)
        return True

    async def _finish(
        self,
        session: AsyncSession,
        job: Job,
        study: Study,
        status: str,
        timings: dict[str, Any],
        now: datetime,
        backfill: dict[str, Any] | None = None,
    ) -> None:
        then: dict[str, Any] = {"status": "succeeded" if status == "completed" else "failed"}
        if backfill is not None:
            state = {**backfill, "backfill_since": now.isoformat()}
            then = {"status": "queued", "stage": BACKFILL, "state": state, "next_attempt_at": now}
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(**then, lease_owner=None, lease_expires_at=None, updated_at=now)
            .execution_options(**NO_SYNC)
        )
        await session.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(status=status, stage_timings=timings, updated_at=now)
            .execution_options(**NO_SYNC)
        )

    async def retry_later(self, job: Job, study: Study, reason: str, delay_s: float) -> None:
        """Release the lease and queue the job again after ``delay_s``."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    status="queued",
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=reason[:500],
                    next_attempt_at=now + timedelta(seconds=delay_s),
                    updated_at=now,
                )
                .execution_options(**NO_SYNC)
            )
            if job.stage != BACKFILL:
                await session.execute(
                    update(Study)
                    .where(Study.id == job.study_id)
                    .values(status="queued", updated_at=now)
                    .execution_options(**NO_SYNC)
                )
        if job.stage != BACKFILL:
            ended(study, "queued", now)

    async def fill_explanation(
        self,
        job: Job,
        study: Study,
        model: str,
        explanation: dict[str, Any],
        remaining: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Backfill one model's explanation (available or, at last, unavailable), audited.

        ``remaining``: the explain requests still pending for the study's other models; the
        job keeps its lease and its state lists them (a crash resumes with them). With none
        left the job ends: succeeded when every explanation it filled is available.
        """
        now = utcnow()
        state = dict(job.state or {})
        failed = bool(state.get("backfill_failed")) or explanation.get("status") != "available"
        async with self.audit.transaction() as session:
            await session.execute(
                update(Result)
                .where(Result.study_id == study.id, Result.model_name == model)
                .values(explanation=explanation)
                .execution_options(**NO_SYNC)
            )
            if remaining:
                state.pop("explain_request", None)
                state.update(explain_requests=list(remaining), backfill_failed=failed)
                values: dict[str, Any] = {
                    "state": state,
                    "lease_expires_at": now + timedelta(seconds=self.lease_s),
                }
            else:
                values = {
                    "status": "failed" if failed else "succeeded",
                    "lease_owner": None,
                    "lease_expires_at": None,
                }
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(**values, updated_at=now)
                .execution_options(**NO_SYNC)
            )
            status = explanation.get("status")
            await self.audit.add(
                session,
                actor=SYSTEM,
                roles=[],
                tenant_id=study.tenant_id,
                action=f"result.explanation.{status}",
                resource_type="result",
                resource_id=study.id,
                outcome="success" if status == "available" else "failure",
                trace_id=current_trace_id(),
            )
        if remaining:
            job.state = state

    async def release(self, job: Job) -> None:
        """Hand the lease back (shutdown): queued again, due now; a no-op once the job ended."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            released = await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == self.worker_id, Job.status == "running")
                .values(status="queued", lease_owner=None, lease_expires_at=None, next_attempt_at=now)
                .execution_options(**NO_SYNC)
            )
            if released.rowcount == 1 and job.stage != BACKFILL:  # type: ignore[attr-defined]
                await session.execute(
                    update(Study)
                    .where(Study.id == job.study_id, Study.status == "running")
                    .values(status="queued", updated_at=now)
                    .execution_options(**NO_SYNC)
                )

    async def fail(self, job: Job, study: Study, code: str, detail: str, reason: str) -> None:
        """End the job and its study as failed, with the reason, and audit it.

        ``code`` and ``detail`` are the study's error; ``reason`` (a short code such as
        ``retry-budget-exhausted`` or ``unprocessable``) is named in the audit action.
        """
        now = utcnow()
        async with self.audit.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    status="failed",
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=detail[:500],
                    updated_at=now,
                )
                .execution_options(**NO_SYNC)
            )
            await session.execute(
                update(Study)
                .where(Study.id == study.id)
                .values(status="failed", error_code=code, error_detail=detail[:500], updated_at=now)
                .execution_options(**NO_SYNC)
            )
            await self.audit.add(
                session,
                actor=SYSTEM,
                roles=[],
                tenant_id=study.tenant_id,
                action=f"study.fail.{reason}"[:64],
                resource_type="study",
                resource_id=study.id,
                outcome="failure",
                trace_id=current_trace_id(),
            )
        ended(study, "failed", now, error=(code, detail[:500]))

    async def backlog(self) -> Backlog:
        """How many jobs are queued or running, and the age of the oldest."""
        async with self.sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(Job.id), func.min(Job.created_at)).where(Job.status.in_(PENDING))
                )
            ).one()
        age = (utcnow() - _aware(oldest)).total_seconds() if oldest is not None else 0.0
        return Backlog(int(count or 0), max(0.0, age))
