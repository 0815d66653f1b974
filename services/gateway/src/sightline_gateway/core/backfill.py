"""Filling in an explanation that was pending when its study's result was delivered.

When explain was down, the result went out without its heatmap (``explanation.status``
``pending``) and the job stayed queued at stage ``backfill``. Its circuit holds it while explain
is not ready; once explain answers, the explanation becomes ``available`` (audited). If explain
stays down for the whole retry budget, or refuses the instance, it becomes ``unavailable``.

A study with several models may have several pending: the job's state lists one explain request
per result (``explain_requests``; a job queued before that holds one ``explain_request``), and
each result is filled in its own commit, so a crash resumes with the ones still pending.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sightline_common.contracts import ExplainRequest
from sightline_common.errors import DependencyUnavailable, SightlineError

from sightline_gateway.clients.retry import RetryPolicy
from sightline_gateway.core.circuits import Circuits
from sightline_gateway.core.workflow import Workflow
from sightline_gateway.db.jobs import BACKFILL, JobQueue
from sightline_gateway.db.models import Job, Study, utcnow

log = logging.getLogger(__name__)


class Backfill:
    """Runs claimed ``backfill`` jobs."""

    def __init__(
        self, *, queue: JobQueue, workflow: Workflow, policy: RetryPolicy, circuits: Circuits
    ) -> None:
        self.queue, self.workflow, self.policy, self.circuits = queue, workflow, policy, circuits

    async def run(self, job: Job, study: Study) -> None:
        """Ask explain for each pending result; fill them in, or queue the job again, or give up."""
        state = dict(job.state or {})
        pending = pending_requests(state)
        while pending:
            request = ExplainRequest.model_validate(pending[0])
            try:
                explained = await self.workflow.explain.explain(request)
            except DependencyUnavailable as exc:
                self.circuits.trip(BACKFILL)
                await self._later(job, study, state, pending, exc.detail)
                return
            except SightlineError as exc:
                explanation: dict[str, Any] = {"status": "unavailable", "reason": exc.detail[:200]}
            except Exception as exc:  # noqa: BLE001 - a bug retries within the budget, then gives up
                log.error("explanation backfill failed unexpectedly: %s", type(exc).__name__)
                await self._later(job, study, state, pending, f"internal error ({type(exc).__name__})")
                return
            else:
                explanation = {"status": "available", **explained.model_dump()}
                log.info("explanation filled in after an outage")
            pending = pending[1:]
            await self.queue.fill_explanation(job, study, request.model_name, explanation, pending)

    async def _later(
        self, job: Job, study: Study, state: dict[str, Any], pending: list[dict[str, Any]], reason: str
    ) -> None:
        since = datetime.fromisoformat(str(state.get("backfill_since") or utcnow().isoformat()))
        delay = self.policy.next_delay(job.attempts, (utcnow() - since).total_seconds())
        if delay is None:
            detail = f"explanation service unavailable for {self.policy.budget_s:g}s"
            for n, request in enumerate(pending):
                model = str(request["model_name"])
                explanation = {"status": "unavailable", "reason": detail}
                await self.queue.fill_explanation(job, study, model, explanation, pending[n + 1 :])
            return
        await self.queue.retry_later(job, study, reason, delay)


def pending_requests(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The explain requests a backfill job still has to make, in the results' order."""
    if "explain_requests" in state:
        return [dict(r) for r in state["explain_requests"]]
    return [dict(state["explain_request"])] if "explain_request" in state else []
