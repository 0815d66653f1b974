"""The sync hand-off: a study submitted with ``mode=sync`` runs in the submitting process at once.

Through the queue, a sync study costs a worker's claim (a query for due jobs, the conditional
update, the job and the study read back) and the waiting request's read of the finished study.
Here its job is stored already leased to this process, in the commit that stores the study (as
durable as a queued job), and run by a task of this process straight away; the request answers
from the study the run ended, mirrored after each commit (``db.jobs.ended``).

Nothing of the queue's guarantees is lost: the run is the worker's own ``run_job`` (checkpoints,
retries, the results' single commit); a job that must retry goes back to the queue with its
delay; a crash leaves the lease to expire and any worker claims the job; on shutdown a run still
going when the grace period ends hands its lease back. Bounded: beyond ``slots`` runs at once,
while preprocess's circuit is open, or once the gateway is stopping, a sync study is queued as
an asynchronous one is.
"""

from __future__ import annotations

import asyncio
import logging

from sightline_gateway.core.circuits import Circuits
from sightline_gateway.core.worker import Worker
from sightline_gateway.db.models import Job, Study

log = logging.getLogger(__name__)

#: The stage a new job starts at: its dependency must be up for a run to start here.
FIRST_STAGE = "preprocess"


class DirectRuns:
    """Runs of sync studies' jobs in this process, at most ``slots`` at once."""

    def __init__(self, *, worker: Worker, circuits: Circuits, slots: int) -> None:
        self.worker, self.circuits, self.slots = worker, circuits, slots
        self._reserved = 0
        self._runs: set[asyncio.Task[None]] = set()
        self.stopping = False

    def reserve(self) -> bool:
        """Take a slot for a study about to be stored (``release_slot`` if it was not leased)."""
        if self.stopping or self._reserved >= self.slots or FIRST_STAGE in self.circuits.blocked_stages():
            return False
        self._reserved += 1
        return True

    def release_slot(self) -> None:
        self._reserved -= 1

    def start(self, job: Job, study: Study) -> None:
        """Run the reserved slot's job (leased to this process) in a task of its own: the
        request that waits on it may end (timeout, disconnect) without cutting the run."""
        task = asyncio.create_task(self.worker.run_in_hand(job, study), name=f"direct-job-{job.id}")
        self._runs.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        self._reserved -= 1
        if not task.cancelled() and task.exception() is not None:
            # run_job ends every error in a retry or a failure; this is a database error in
            # those: the lease expires and a worker claims the job again.
            log.error("direct job run failed: %s", type(task.exception()).__name__)

    def running(self) -> list[asyncio.Task[None]]:
        """The runs in progress (shutdown lets them finish within the grace period)."""
        return list(self._runs)
