"""A study's path, wired once: intake, the durable job queue and its workers, retention.

The parts live in their own modules (``core.intake``, ``db.jobs``, ``core.worker``,
``core.workflow``, ``core.retention``); this façade builds them from one set of dependencies
so that the app, the routes and the tests share one object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from sightline_common.drift import DriftMonitor
from sightline_common.storage import ObjectStore
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.clients.pacs import PacsSender
from sightline_gateway.clients.retry import RetryPolicy
from sightline_gateway.clients.services import Deid, Explain, Preprocess
from sightline_gateway.core.circuits import Circuits
from sightline_gateway.core.direct import DirectRuns
from sightline_gateway.core.envelope import TenantKeys
from sightline_gateway.core.forwarder import Forwarder
from sightline_gateway.core.intake import Accepted, Intake
from sightline_gateway.core.manifests import ManifestCache
from sightline_gateway.core.retention import Retention
from sightline_gateway.core.risk import ReidentificationRisk
from sightline_gateway.core.routing import Header, Router
from sightline_gateway.core.signals import Wakeup, Watchers
from sightline_gateway.core.versions import VersionPlanner
from sightline_gateway.core.worker import Worker, run_backlog_metrics
from sightline_gateway.core.workflow import Workflow
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.deliveries import Deliveries
from sightline_gateway.db.jobs import JobQueue
from sightline_gateway.db.lifecycle import Lifecycle
from sightline_gateway.db.models import Job, Study
from sightline_gateway.settings import PacsDestination

__all__ = ["Accepted", "Pipeline"]


class Pipeline:
    """Everything a study goes through, shared by the API and the workers."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        audit: AuditLog,
        deid: Deid,
        preprocess: Preprocess,
        explain: Explain,
        model_repository: Path,
        models: Sequence[str] = ("derm-cnn",),
        models_enabled: Mapping[str, Sequence[str]] | None = None,
        retry_budget_s: float = 900.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        deid_retry_budget_s: float = 20.0,
        lease_s: float = 120.0,
        poll_s: float = 0.5,
        drift: DriftMonitor | None = None,
        circuits: Circuits | None = None,
        reidentification_k: int = 5,
        destinations: Mapping[str, PacsDestination] | None = None,
        tenant_keys: TenantKeys | None = None,
        senders: Mapping[str, PacsSender] | None = None,
        delivery_policy: RetryPolicy | None = None,
        delivery_lease_s: float = 120.0,
        lifecycle: Lifecycle | None = None,
        versions: VersionPlanner | None = None,
        sync_direct_jobs: int = 0,
    ) -> None:
        self.audit = audit
        policy = RetryPolicy(budget_s=retry_budget_s, first_s=backoff_s, cap_s=backoff_max_s)
        self.circuits = circuits or Circuits({}, cooldown_s=backoff_s)
        self.wake, watchers = Wakeup(), Watchers()
        self.manifests = ManifestCache(model_repository)
        self.router = Router(self.manifests, models, models_enabled)
        self.queue = JobQueue(sessions, audit, lease_s=lease_s)
        self.risk = ReidentificationRisk(sessions, reidentification_k)
        self.deliveries = Deliveries(sessions, audit, lease_s=delivery_lease_s)
        #: The way back to tenants' PACS; None when no tenant has one.
        self.forwarder: Forwarder | None = None
        if destinations:
            if tenant_keys is None or senders is None:
                raise ValueError("PACS destinations need the tenant keys and the senders")
            self.forwarder = Forwarder(
                deliveries=self.deliveries,
                store=store,
                keys=tenant_keys,
                destinations=destinations,
                senders=senders,
                policy=delivery_policy or RetryPolicy(budget_s=24 * 3600.0, first_s=5.0, cap_s=600.0),
                poll_s=poll_s,
            )
        self.intake = Intake(
            sessions=sessions,
            store=store,
            audit=audit,
            queue=self.queue,
            deid=deid,
            router=self.router,
            wake=self.wake,
            watchers=watchers,
            backoff_s=backoff_s,
            deid_budget_s=deid_retry_budget_s,
            risk=self.risk,
            forwarder=self.forwarder,
        )
        self.workflow = Workflow(
            store=store,
            queue=self.queue,
            preprocess=preprocess,
            explain=explain,
            manifests=self.manifests,
            default_model=models[0],
            policy=policy,
            drift=drift,
            forwarder=self.forwarder,
            versions=versions,
            lifecycle=lifecycle,
        )
        self.worker = Worker(
            queue=self.queue,
            workflow=self.workflow,
            wake=self.wake,
            watchers=watchers,
            policy=policy,
            circuits=self.circuits,
            poll_s=poll_s,
        )
        #: Sync studies run in this process at once (``core.direct``); 0: through the queue.
        self.direct = DirectRuns(worker=self.worker, circuits=self.circuits, slots=sync_direct_jobs)
        self.circuits.on_close(self._resume)
        self.retention = Retention(sessions=sessions, store=store, audit=audit)

    @property
    def store(self) -> ObjectStore:
        return self.intake.store

    @store.setter
    def store(self, store: ObjectStore) -> None:
        """Swap the object store of every part (tests move a running app onto S3)."""
        self.intake.store = self.workflow.store = self.retention.store = store
        if self.forwarder is not None:
            self.forwarder.store = store

    @property
    def explain(self) -> Explain:
        return self.workflow.explain

    @explain.setter
    def explain(self, explain: Explain) -> None:
        self.workflow.explain = explain

    # ---- intake -------------------------------------------------------------------------

    async def find_idempotent(self, tenant: str, key: str | None) -> Study | None:
        return await self.intake.find_idempotent(tenant, key)

    async def accept(
        self,
        *,
        tenant: str,
        submitted_by: str,
        instances: Sequence[bytes],
        idempotency_key: str | None,
        explain: bool,
        roles: Sequence[str] = (),
        watch: bool = False,
        fingerprint: str | None = None,
        models: Sequence[str] | None = None,
        headers: Sequence[Header] | None = None,
    ) -> Accepted:
        """See :meth:`Intake.accept`; a study someone waits for (``watch``) runs here at once
        when a slot is free (``core.direct``)."""
        leased = watch and self.direct.reserve()
        try:
            accepted = await self.intake.accept(
                tenant=tenant,
                submitted_by=submitted_by,
                instances=instances,
                idempotency_key=idempotency_key,
                explain=explain,
                roles=roles,
                watch=watch,
                fingerprint=fingerprint,
                models=models,
                headers=headers,
                leased=leased,
            )
        except BaseException:
            if leased:
                self.direct.release_slot()
            raise
        if accepted.job is not None:
            self.direct.start(accepted.job, accepted.study)
        elif leased:  # an idempotent replay: nothing new to run
            self.direct.release_slot()
        return accepted

    async def wait(self, study_id: str, timeout_s: float, study: Study | None = None) -> Study:
        """See :meth:`Intake.wait`."""
        return await self.intake.wait(study_id, timeout_s, study)

    async def get_study(self, study_id: str) -> Study:
        return await self.intake.get_study(study_id)

    # ---- jobs ---------------------------------------------------------------------------

    async def claim(self) -> Job | None:
        return await self.queue.claim()

    async def run_job(self, job: Job) -> None:
        await self.worker.run_job(job)

    async def run_worker(self, stop: asyncio.Event) -> None:
        await self.worker.run(stop)

    async def run_backlog_metrics(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        await run_backlog_metrics(self.queue, stop, interval_s)

    async def run_circuits(self, stop: asyncio.Event, interval_s: float) -> None:
        """Probe preprocess and explain; hold and resume their jobs (see ``core.circuits``)."""
        await self.circuits.run(stop, interval_s)

    async def _resume(self, stage: str) -> None:
        await self.queue.resume(stage)
        self.wake.notify_all()

    def stop_workers(self) -> None:
        """Wake every idle worker so that it sees its stop event at once, and answer every
        waiting synchronous request with its study as it stands (202; the job goes on)."""
        self.direct.stopping = True
        self.wake.notify_all()
        self.intake.watchers.close()

    # ---- the way back --------------------------------------------------------------------

    async def run_forwarder(self, stop: asyncio.Event) -> None:
        """Deliver results to tenants' PACS (see ``core.forwarder``); returns at once without any."""
        if self.forwarder is not None:
            await self.forwarder.run(stop)

    # ---- retention ----------------------------------------------------------------------

    async def purge_expired(self, older_than: timedelta) -> int:
        return await self.retention.purge_expired(older_than)

    async def run_retention(self, stop: asyncio.Event, older_than: timedelta, interval_s: float) -> None:
        await self.retention.run(stop, older_than, interval_s)
