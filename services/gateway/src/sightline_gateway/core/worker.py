"""The job worker: claim a due job, run its stages, then retry it later or end it.

Also publishes the queue's backlog for the alert on stuck or slow jobs.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry import propagate, trace
from prometheus_client import Gauge
from sightline_common.errors import DependencyUnavailable, SightlineError

from sightline_gateway.clients.retry import RetryPolicy
from sightline_gateway.core.backfill import Backfill
from sightline_gateway.core.circuits import Circuits
from sightline_gateway.core.signals import Wakeup, Watchers
from sightline_gateway.core.workflow import Workflow
from sightline_gateway.db.jobs import BACKFILL, JobQueue
from sightline_gateway.db.models import Job, Study, utcnow

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

JOBS_PENDING = Gauge(
    "sightline_jobs_pending", "Studies queued or running in the durable job queue.", ["service"]
)
#: A job claimed this often without ending keeps killing its worker (its lease expires each time).
MAX_CLAIMS = 200
BUDGET_EXHAUSTED = "retry-budget-exhausted"

JOBS_OLDEST_AGE = Gauge(
    "sightline_jobs_oldest_pending_age_seconds", "Age of the oldest queued or running job.", ["service"]
)


class Worker:
    """Runs jobs from the queue; several may run in one process (one per ``run`` task)."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        workflow: Workflow,
        wake: Wakeup,
        watchers: Watchers,
        policy: RetryPolicy,
        circuits: Circuits,
        poll_s: float,
    ) -> None:
        self.queue, self.workflow, self.wake, self.watchers = queue, workflow, wake, watchers
        self.policy, self.circuits, self.poll_s = policy, circuits, poll_s
        self.backfill = Backfill(queue=queue, workflow=workflow, policy=policy, circuits=circuits)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set.

        Graceful shutdown: once ``stop`` is set no job is claimed; the job in hand runs to its
        end unless this task is cancelled (the grace period ran out), which hands its lease back
        so that another replica takes the job at once (it resumes after its last checkpoint).
        """
        self.wake.workers += 1
        try:
            while not stop.is_set():
                try:
                    job = await self.queue.claim(self.circuits.blocked_stages())
                except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the worker
                    log.error("job claim failed: %s", type(exc).__name__)
                    job = None
                if job is None:
                    await self.wake.wait(self.poll_s)
                    continue
                if stop.is_set():  # claimed while shutting down
                    await self.queue.release(job)
                    break
                await self.run_in_hand(job)  # then claim again at once: there may be more
        finally:
            self.wake.workers -= 1

    async def run_in_hand(self, job: Job, study: Study | None = None) -> None:
        """:meth:`run_job` for a job this process holds; cancelled (the grace period ran out),
        its lease is handed back so that another replica takes the job at once."""
        try:
            await self.run_job(job, study)
        except asyncio.CancelledError:
            await asyncio.shield(self.queue.release(job))
            log.warning("shutdown: job lease handed back")
            raise

    async def run_job(self, job: Job, study: Study | None = None) -> None:
        """Run one claimed job to a result, a retry later, or a final failure with its reason.

        A study fails only for its own reasons: its content was refused, or its dependencies
        stayed unavailable for the whole retry budget. ``study``: the job's study in hand (the
        sync hand-off's), else read with the claim.
        """
        if study is None:
            study = await self.queue.study_of(job)
        if job.stage == BACKFILL:
            await self.backfill.run(job, study)
            return
        if job.attempts > MAX_CLAIMS:
            await self._fail(job, study, "internal", f"abandoned after {job.attempts} claims", "abandoned")
            return
        parent = propagate.extract(dict((job.state or {}).get("traceparent") or {}))
        with tracer.start_as_current_span("gateway.job", context=parent) as span:
            span.set_attribute("sightline.study_id", study.id)
            span.set_attribute("sightline.job.attempt", job.attempts)
            try:
                await self.workflow.run(job, study)
            except DependencyUnavailable as exc:
                span.set_attribute("sightline.error", exc.code)
                self.circuits.trip(job.stage)
                await self._retry_or_fail(job, study, exc.code, exc.detail)
            except SightlineError as exc:
                span.set_attribute("sightline.error", exc.code)
                await self._fail(job, study, exc.code, exc.detail, exc.code)
            except Exception as exc:  # noqa: BLE001 - an unexpected error retries, then ends the job
                span.set_attribute("sightline.error", type(exc).__name__)
                log.error("job stage failed unexpectedly: %s", type(exc).__name__)
                await self._retry_or_fail(job, study, "internal", f"internal error ({type(exc).__name__})")
        self.watchers.report(study.id)

    async def _retry_or_fail(self, job: Job, study: Study, code: str, reason: str) -> None:
        elapsed = (utcnow() - job.created_at).total_seconds()
        delay = self.policy.next_delay(job.attempts, elapsed)
        if delay is None:
            detail = (
                f"retry budget of {self.policy.budget_s:g}s exhausted after {job.attempts} attempts: {reason}"
            )
            await self._fail(job, study, code, detail, BUDGET_EXHAUSTED)
            return
        await self.queue.retry_later(job, study, reason, delay)
        log.warning("job retry in %.1fs (attempt %d)", delay, job.attempts)

    async def _fail(self, job: Job, study: Study, code: str, detail: str, reason: str) -> None:
        await self.queue.fail(job, study, code, detail, reason)
        log.warning("job failed: %s (%s)", code, reason)


async def run_backlog_metrics(queue: JobQueue, stop: asyncio.Event, interval_s: float = 5.0) -> None:
    """Publish the queue depth and the age of the oldest queued job (for the backlog alert)."""
    while not stop.is_set():
        try:
            backlog = await queue.backlog()
            JOBS_PENDING.labels("gateway").set(backlog.pending)
            JOBS_OLDEST_AGE.labels("gateway").set(backlog.oldest_age_s)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the gateway
            log.warning("backlog metrics failed: %s", type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
