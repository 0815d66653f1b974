"""The job worker: claim a due job, run its stages, then retry it later or end it.

Also publishes the queue's backlog for the alert on stuck or slow jobs.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry import propagate, trace
from prometheus_client import Gauge
from sightline_common.errors import DependencyUnavailable, SightlineError

from sightline_gateway.core.signals import Wakeup, Watchers
from sightline_gateway.core.workflow import Workflow
from sightline_gateway.db.jobs import JobQueue
from sightline_gateway.db.models import Job, Study

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

JOBS_PENDING = Gauge(
    "sightline_jobs_pending", "Studies queued or running in the durable job queue.", ["service"]
)
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
        max_attempts: int,
        backoff_s: float,
        poll_s: float,
    ) -> None:
        self.queue, self.workflow, self.wake, self.watchers = queue, workflow, wake, watchers
        self.max_attempts, self.backoff_s, self.poll_s = max_attempts, backoff_s, poll_s

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set."""
        self.wake.workers += 1
        try:
            while not stop.is_set():
                try:
                    job = await self.queue.claim()
                except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the worker
                    log.error("job claim failed: %s", type(exc).__name__)
                    job = None
                if job is None:
                    await self.wake.wait(self.poll_s)
                    continue
                await self.run_job(job)  # then claim again at once: there may be more
        finally:
            self.wake.workers -= 1

    async def run_job(self, job: Job) -> None:
        """Run one claimed job to a result, a retry later, or a final failure with its reason."""
        study = await self.queue.study_of(job)
        if job.attempts > self.max_attempts:
            await self._fail(
                job, study, "gave-up", f"gave up after {self.max_attempts} attempts: {job.last_error}"
            )
            return
        parent = propagate.extract(dict((job.state or {}).get("traceparent") or {}))
        with tracer.start_as_current_span("gateway.job", context=parent) as span:
            span.set_attribute("sightline.study_id", study.id)
            span.set_attribute("sightline.job.attempt", job.attempts)
            try:
                await self.workflow.run(job, study)
            except DependencyUnavailable as exc:
                span.set_attribute("sightline.error", exc.code)
                if job.attempts >= self.max_attempts:
                    await self._fail(
                        job, study, exc.code, f"gave up after {job.attempts} attempts: {exc.detail}"
                    )
                else:
                    await self._retry_later(job, exc.detail)
            except SightlineError as exc:
                span.set_attribute("sightline.error", exc.code)
                await self._fail(job, study, exc.code, exc.detail)
            except Exception as exc:  # noqa: BLE001 - an unexpected error retries, then ends the job
                span.set_attribute("sightline.error", type(exc).__name__)
                log.error("job stage failed unexpectedly: %s", type(exc).__name__)
                if job.attempts >= self.max_attempts:
                    await self._fail(job, study, "internal", f"internal error ({type(exc).__name__})")
                else:
                    await self._retry_later(job, f"internal error ({type(exc).__name__})")
        self.watchers.report(study.id)

    async def _retry_later(self, job: Job, reason: str) -> None:
        delay = self.backoff_s * 2 ** max(0, job.attempts - 1)
        await self.queue.retry_later(job, reason, delay)
        log.warning("job retry in %.1fs (attempt %d)", delay, job.attempts)

    async def _fail(self, job: Job, study: Study, code: str, detail: str) -> None:
        await self.queue.fail(job, study, code, detail)
        log.warning("job failed: %s", code)


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
