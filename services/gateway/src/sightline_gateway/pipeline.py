"""Orchestration: accept a study (deid -> object storage -> durable job), the job worker and retention.

Identified bytes live only in memory for the duration of the request that brought them: they
are de-identified before the request returns and before anything is written anywhere, so a
durable job only ever holds de-identified object keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from opentelemetry import propagate, trace
from prometheus_client import Gauge
from sightline_common.contracts import ExplainRequest
from sightline_common.drift import DriftMonitor
from sightline_common.errors import DependencyUnavailable, NotFound, SightlineError
from sightline_common.manifest import ModelManifest, model_dir
from sightline_common.metrics import STAGE_DURATION
from sightline_common.storage import ObjectStore
from sightline_common.telemetry import current_trace_id, inject_headers
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.clients.services import Deid, Explain, Inference, Preprocess
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.models import Job, Result, Study, utcnow

JOBS_PENDING = Gauge(
    "sightline_jobs_pending", "Studies queued or running in the durable job queue.", ["service"]
)
JOBS_OLDEST_AGE = Gauge(
    "sightline_jobs_oldest_pending_age_seconds", "Age of the oldest queued or running job.", ["service"]
)


def _aware(value: Any) -> Any:
    """SQLite returns naive datetimes; they are UTC."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
T = TypeVar("T")

SYSTEM = "system"
#: Bulk UPDATEs here go to rows the short-lived session has not loaded (or reloads after): no
#: need for SQLAlchemy to evaluate each WHERE clause against the identity map.
NO_SYNC = {"synchronize_session": False}


class ManifestCache:
    """Model manifests parsed once per change of ``manifest.json`` (keyed on its mtime and size)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._cache: dict[str, tuple[tuple[int, int], ModelManifest]] = {}

    def get(self, name: str) -> ModelManifest:
        path = model_dir(self.repository, name) / "manifest.json"
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        manifest = ModelManifest.model_validate_json(path.read_bytes())
        self._cache[name] = (stamp, manifest)
        return manifest


class Wakeup:
    """Wakes one idle worker per queued job instead of every worker (each would run a claim).

    A notice that finds no idle worker is kept (up to one per worker), so a worker whose claim
    ran just before the job committed does not sleep a poll interval on it.
    """

    def __init__(self) -> None:
        self._idle: deque[asyncio.Future[None]] = deque()
        self._pending = 0
        self.workers = 0

    def notify(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._pending = min(self._pending + 1, max(1, self.workers))

    def notify_all(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._pending = max(1, self.workers)

    async def wait(self, timeout_s: float) -> None:
        """Return at the next notice or after ``timeout_s``."""
        if self._pending:
            self._pending -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            pass
        finally:
            if waiter in self._idle:
                self._idle.remove(waiter)


def idempotency_hash(tenant: str, key: str) -> str:
    return hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()


def instance_key(study_id: str, n: int) -> str:
    return f"studies/{study_id}/instances/{n}.dcm"


async def retry(fn: Callable[[], Awaitable[T]], attempts: int, backoff_s: float, stage: str) -> T:
    """Call ``fn``; retry only :class:`DependencyUnavailable`, doubling the delay."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except DependencyUnavailable:
            if attempt == attempts:
                raise
            log.warning("stage %s unavailable, retry %d/%d", stage, attempt, attempts - 1)
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


@dataclass
class Accepted:
    study: Study
    created: bool


class Pipeline:
    """Everything a study goes through, shared by the API and the worker."""

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
        model_name: str,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        lease_s: float = 120.0,
        poll_s: float = 0.5,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.sessions, self.store, self.audit = sessions, store, audit
        self.drift = drift
        self._drift_registered: set[tuple[str, int]] = set()
        self.deid, self.preprocess, self.explain = deid, preprocess, explain
        self.model_repository, self.model_name = model_repository, model_name
        self.max_attempts, self.backoff_s, self.lease_s, self.poll_s = (
            max_attempts,
            backoff_s,
            lease_s,
            poll_s,
        )
        self.worker_id = uuid.uuid4().hex[:16]
        self.wake = Wakeup()
        self.manifests = ManifestCache(model_repository)
        self._done: dict[str, asyncio.Event] = {}
        self._claimed: dict[str, Study] = {}  # read by claim() for run_job()

    def manifest(self) -> ModelManifest:
        return self.manifests.get(self.model_name)

    def _observe_drift(
        self, manifest: ModelManifest, version: int, top: dict[str, Any], refer: bool, segment: str
    ) -> None:
        """Feed the drift monitor: image statistics, calibrated score and decision, per tenant (site)."""
        if self.drift is None:
            return
        if (manifest.name, manifest.version) not in self._drift_registered:
            self.drift.register(manifest)
            self._drift_registered.add((manifest.name, manifest.version))
        self.drift.observe(
            manifest.name,
            version,
            stats=top["image_stats"],
            score=float(top["probability"]),
            decision=refer,
            segment=segment,
        )

    async def run_backlog_metrics(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        """Publish the queue depth and the age of the oldest queued job (for the backlog alert)."""
        while not stop.is_set():
            try:
                async with self.sessions() as session:
                    row = (
                        await session.execute(
                            select(func.count(Job.id), func.min(Job.created_at)).where(
                                Job.status.in_(("queued", "running"))
                            )
                        )
                    ).one()
                JOBS_PENDING.labels("gateway").set(row[0] or 0)
                oldest = row[1]
                age = (utcnow() - _aware(oldest)).total_seconds() if oldest is not None else 0.0
                JOBS_OLDEST_AGE.labels("gateway").set(max(0.0, age))
            except Exception as exc:  # noqa: BLE001 - metrics must never stop the gateway
                log.warning("backlog metrics failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    # ---- accepting a study --------------------------------------------------------------

    async def find_idempotent(self, tenant: str, key: str | None) -> Study | None:
        if not key:
            return None
        async with self.sessions() as session:
            return await session.scalar(
                select(Study).where(
                    Study.tenant_id == tenant, Study.idempotency_key_hash == idempotency_hash(tenant, key)
                )
            )

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
    ) -> Accepted:
        """De-identify every instance, store the results, and queue one durable job.

        The study, its job and the ``study.create`` audit event (actor ``submitted_by`` with
        ``roles``) commit together; an idempotent replay is audited by the caller. ``watch``: the
        caller will :meth:`wait` for the new study (registered before any worker can finish it).
        """
        existing = await self.find_idempotent(tenant, idempotency_key)
        if existing is not None:
            return Accepted(existing, False)
        study_id = str(uuid.uuid4())
        timings: dict[str, float] = {}
        keys: list[str] = []
        summaries: list[dict[str, Any]] = []
        deid_uid: str | None = None
        try:
            for n, identified in enumerate(instances):
                start = time.perf_counter()
                with tracer.start_as_current_span("gateway.deid") as span:
                    span.set_attribute("sightline.instance_bytes", len(identified))
                    outcome = await retry(
                        lambda data=identified: self.deid.deidentify(data, tenant),
                        3,
                        0.2 * self.backoff_s,
                        "deid",
                    )
                timings["deid_ms"] = timings.get("deid_ms", 0.0) + (time.perf_counter() - start) * 1000
                STAGE_DURATION.labels("gateway", "deid").observe(time.perf_counter() - start)
                if deid_uid is None:
                    deid_uid = _study_uid(outcome.dicom)
                start = time.perf_counter()
                key = instance_key(study_id, n)
                await asyncio.to_thread(self.store.put, key, outcome.dicom, "application/dicom")
                timings["store_ms"] = timings.get("store_ms", 0.0) + (time.perf_counter() - start) * 1000
                keys.append(key)
                summaries.append(outcome.summary)
        except BaseException:
            await self._delete_objects(keys)
            raise
        study = Study(
            id=study_id,
            tenant_id=tenant,
            submitted_by=submitted_by,
            status="queued",
            explain=explain,
            idempotency_key_hash=idempotency_hash(tenant, idempotency_key) if idempotency_key else None,
            instance_keys=keys,
            deid_study_uid=deid_uid,
            deid_summary=_merge_summaries(summaries),
            stage_timings={k: round(v, 2) for k, v in timings.items()},
            trace_id=current_trace_id(),
        )
        try:
            async with self.audit.transaction() as session:
                session.add(study)
                await session.flush()
                # The job continues the submitting request's trace: one trace per study.
                session.add(
                    Job(
                        id=str(uuid.uuid4()),
                        study_id=study_id,
                        status="queued",
                        stage="preprocess",
                        state={"traceparent": inject_headers()},
                    )
                )
                await session.flush()
                await self.audit.add(
                    session,
                    actor=submitted_by,
                    roles=roles,
                    tenant_id=tenant,
                    action="study.create",
                    resource_type="study",
                    resource_id=study_id,
                    trace_id=study.trace_id,
                )
        except DbIntegrityError:
            await self._delete_objects(keys)
            again = await self.find_idempotent(tenant, idempotency_key)
            if again is None:
                raise
            return Accepted(again, False)
        if watch:
            self._done.setdefault(study_id, asyncio.Event())
        self.wake.notify()
        return Accepted(study, True)

    async def _delete_objects(self, keys: Sequence[str]) -> None:
        for key in keys:
            await asyncio.to_thread(self.store.delete, key)

    async def wait(self, study_id: str, timeout_s: float, study: Study | None = None) -> Study:
        """Wait (bounded) until the study is completed or failed; return it either way.

        ``study``: the study as :meth:`accept` (with ``watch``) just stored it, so not read again
        before the worker's first report.
        """
        registered = study is not None and study_id in self._done
        event = self._done.setdefault(study_id, asyncio.Event())
        current = study if registered else None
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if current is None:
                    event.clear()  # a report after this read wakes the next wait
                    current = await self.get_study(study_id)
                if current.status in ("completed", "failed") or time.monotonic() >= deadline:
                    return current
                try:
                    await asyncio.wait_for(event.wait(), min(0.5, max(0.01, deadline - time.monotonic())))
                except TimeoutError:
                    pass
                current = None
        finally:
            self._done.pop(study_id, None)

    async def get_study(self, study_id: str) -> Study:
        async with self.sessions() as session:
            study = await session.get(Study, study_id)
        if study is None:
            raise NotFound("study not found")
        return study

    # ---- the worker ---------------------------------------------------------------------

    async def claim(self) -> Job | None:
        """Take one due job under a lease; a conditional UPDATE makes the claim exclusive.

        The study is marked running in the same transaction.
        """
        now = utcnow()
        async with self.sessions() as session, session.begin():
            due = (
                await session.scalars(
                    select(Job.id)
                    .where(
                        Job.status.in_(("queued", "running")),
                        Job.next_attempt_at <= now,
                        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
                    )
                    .order_by(Job.next_attempt_at)
                    .limit(8)
                )
            ).all()
            for job_id in due:
                claimed = await session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.status.in_(("queued", "running")),
                        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
                    )
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

    async def run_worker(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set."""
        self.wake.workers += 1
        try:
            while not stop.is_set():
                try:
                    job = await self.claim()
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
        study = self._claimed.pop(job.id, None)
        if study is None:
            async with self.sessions() as session:
                study = await session.get(Study, job.study_id)
        assert study is not None
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
                await self._stages(job, study)
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
        event = self._done.get(study.id)
        if event is not None:
            event.set()

    async def _stages(self, job: Job, study: Study) -> None:
        state = dict(job.state or {})
        timings = dict(study.stage_timings or {})
        manifest = self.manifest()
        if "inferences" not in state:
            start = time.perf_counter()
            inferences = []
            for key in study.instance_keys:
                data = await asyncio.to_thread(self.store.get, key)
                with tracer.start_as_current_span("gateway.preprocess"):
                    inf: Inference = await self.preprocess.infer(data)
                inferences.append({"key": key, **inf.__dict__})
            timings["preprocess_ms"] = round((time.perf_counter() - start) * 1000, 2)
            STAGE_DURATION.labels("gateway", "preprocess").observe(time.perf_counter() - start)
            state["inferences"] = inferences
            if study.explain:
                # Checkpoint only before another remote stage; the result's commit follows at once.
                await self._checkpoint(job, study, state, timings, "explain")
        inferences = state["inferences"]
        top = max(inferences, key=lambda i: i["probability"])
        if study.explain and "explanation" not in state:
            start = time.perf_counter()
            request = ExplainRequest(
                object_key=top["key"],
                output_prefix=f"studies/{study.id}/explain/",
                model_name=manifest.name,
                model_version=int(top["model_version"] or manifest.version),
                target=1,
            )
            try:
                with tracer.start_as_current_span("gateway.explain"):
                    explained = await retry(
                        lambda: self.explain.explain(request), 2, self.backoff_s, "explain"
                    )
                state["explanation"] = {"status": "available", **explained.model_dump()}
            except DependencyUnavailable:
                if job.attempts < self.max_attempts:
                    raise
                state["explanation"] = {"status": "unavailable", "reason": "explanation service unavailable"}
            except SightlineError as exc:
                # The probability stands without a heatmap; say so rather than fail the study.
                state["explanation"] = {"status": "unavailable", "reason": exc.detail[:200]}
            timings["explain_ms"] = round((time.perf_counter() - start) * 1000, 2)
            STAGE_DURATION.labels("gateway", "explain").observe(time.perf_counter() - start)
        await self._store_result(job, study, manifest, inferences, top, state.get("explanation"), timings)

    async def _checkpoint(
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
        job.state, study.stage_timings = state, timings

    async def _store_result(
        self,
        job: Job,
        study: Study,
        manifest: ModelManifest,
        inferences: list[dict[str, Any]],
        top: dict[str, Any],
        explanation: dict[str, Any] | None,
        timings: dict[str, Any],
    ) -> None:
        version = int(top["model_version"] or manifest.version)
        probability = float(top["probability"])
        created = study.created_at
        timings = dict(timings)
        timings["total_ms"] = round((utcnow() - created).total_seconds() * 1000, 2)
        result = Result(
            id=str(uuid.uuid4()),
            study_id=study.id,
            tenant_id=study.tenant_id,
            model_name=manifest.name,
            model_version=version,
            model_sha256=manifest.artifacts.get(f"{version}/model.onnx", ""),
            placeholder=manifest.placeholder or any(i["placeholder"] for i in inferences),
            probability=probability,
            threshold=manifest.threshold,
            refer=manifest.decision(probability),
            instances=[
                {
                    "index": n,
                    "probability": i["probability"],
                    "logit": i["logit"],
                    "image_stats": i["image_stats"],
                }
                for n, i in enumerate(inferences)
            ],
            explanation=explanation,
            status="preliminary",
            trace_id=current_trace_id() or study.trace_id,
        )
        now = utcnow()
        try:
            # The result, the job's and study's end and the audit event commit together.
            async with self.audit.transaction() as session:
                session.add(result)
                await session.flush()
                await self._finish(session, job, study, "completed", timings, now)
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
        except DbIntegrityError:
            # Another worker stored this study's result first (a lease lost mid-job): keep theirs.
            async with self.sessions() as session, session.begin():
                await self._finish(session, job, study, "completed", timings, now)
            return
        self._observe_drift(manifest, version, top, result.refer, study.tenant_id)

    async def _finish(
        self, session: AsyncSession, job: Job, study: Study, status: str, timings: dict[str, Any], now: Any
    ) -> None:
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                status="succeeded" if status == "completed" else "failed",
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            .execution_options(**NO_SYNC)
        )
        await session.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(status=status, stage_timings=timings, updated_at=now)
            .execution_options(**NO_SYNC)
        )

    async def _retry_later(self, job: Job, reason: str) -> None:
        delay = self.backoff_s * 2 ** max(0, job.attempts - 1)
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
                    next_attempt_at=now + timedelta(seconds=delay),
                    updated_at=now,
                )
                .execution_options(**NO_SYNC)
            )
            await session.execute(
                update(Study)
                .where(Study.id == job.study_id)
                .values(status="queued", updated_at=now)
                .execution_options(**NO_SYNC)
            )
        log.warning("job retry in %.1fs (attempt %d)", delay, job.attempts)

    async def _fail(self, job: Job, study: Study, code: str, detail: str) -> None:
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
                action="study.fail",
                resource_type="study",
                resource_id=study.id,
                outcome="failure",
                trace_id=current_trace_id(),
            )
        log.warning("job failed: %s", code)

    async def _set_study(self, study_id: str, **values: Any) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(updated_at=utcnow(), **values)
                .execution_options(**NO_SYNC)
            )

    # ---- retention ----------------------------------------------------------------------

    async def purge_expired(self, older_than: timedelta) -> int:
        """Delete the de-identified images and heatmaps of studies older than ``older_than``."""
        cutoff = utcnow() - older_than
        async with self.sessions() as session:
            studies = (
                await session.scalars(
                    select(Study)
                    .where(
                        Study.created_at < cutoff,
                        Study.purged_at.is_(None),
                        Study.status.in_(("completed", "failed")),
                    )
                    .limit(500)
                )
            ).all()
        for study in studies:
            keys = [k for k, _ in await asyncio.to_thread(self.store.list, f"studies/{study.id}/")]
            await self._delete_objects(keys)
            await self._set_study(study.id, purged_at=utcnow())
            await self.audit.append(
                actor=SYSTEM,
                roles=[],
                tenant_id=study.tenant_id,
                action="retention.purge",
                resource_type="study",
                resource_id=study.id,
            )
        if studies:
            log.info("retention purged the objects of %d studies", len(studies))
        return len(studies)

    async def run_retention(self, stop: asyncio.Event, older_than: timedelta, interval_s: float) -> None:
        while not stop.is_set():
            try:
                await self.purge_expired(older_than)
            except Exception as exc:  # noqa: BLE001 - retry at the next interval
                log.error("retention pass failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass


def _study_uid(dicom: bytes) -> str | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.StudyInstanceUID) if "StudyInstanceUID" in ds else None
    except Exception:  # noqa: BLE001 - the UID is a convenience for the SR; preprocess validates the file
        return None


def _merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per action across instances, plus the recipe (no values)."""
    merged: dict[str, Any] = {"instances": len(summaries)}
    actions: dict[str, int] = {}
    for s in summaries:
        for k, v in (s.get("actions") or {}).items():
            if isinstance(v, int):
                actions[k] = actions.get(k, 0) + v
        for k, v in s.items():
            if k in ("recipe", "recipe_version", "burned_in") and isinstance(v, str):
                merged[k] = v
            elif isinstance(v, int) and not isinstance(v, bool):
                merged[k] = merged.get(k, 0) + v
    merged["actions"] = actions
    return merged
