"""Accepting a study: de-identify, store, queue one durable job; idempotent replays; sync waits.

Identified bytes live only in memory for the duration of the request that brought them: they
are de-identified before the request returns and before anything is written anywhere, so a
durable job only ever holds de-identified object keys.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
from opentelemetry import trace
from sightline_common.errors import DependencyUnavailable, NotFound, UnprocessableInput
from sightline_common.metrics import STAGE_DURATION
from sightline_common.storage import ObjectStore
from sightline_common.telemetry import current_trace_id
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.clients.retry import call_with_retry
from sightline_gateway.clients.services import Deid, DeidOutcome
from sightline_gateway.core.forwarder import Forwarder
from sightline_gateway.core.objects import delete_objects, instance_key
from sightline_gateway.core.reidentify import OriginalStudy
from sightline_gateway.core.risk import Placement, ReidentificationRisk
from sightline_gateway.core.routing import (
    REFUSAL_ACTION,
    REFUSAL_OUTCOME,
    REFUSAL_RESOURCE,
    REFUSED,
    ROUTED,
    SERVED_PER_STUDY,
    Header,
    Router,
    read_header,
)
from sightline_gateway.core.signals import Wakeup, Watchers
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.jobs import JobQueue
from sightline_gateway.db.models import Job, Study

tracer = trace.get_tracer(__name__)

#: De-identification runs while the caller waits (identified bytes are never queued): it is
#: retried until the request's de-identification budget is spent, backing off faster than a job.
DEID_BACKOFF_FACTOR = 0.2
DEID_BACKOFF_MAX_S = 2.0
#: Retry-After of the 503 a caller gets once the budget is spent (a deid pod restarts in 10-60 s).
DEID_RETRY_AFTER_S = 5


def idempotency_hash(tenant: str, key: str) -> str:
    return hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()


@dataclass
class Accepted:
    study: Study
    created: bool
    #: The new study's job when it was stored already leased to this process (``leased``).
    job: Job | None = None


class Intake:
    """The synchronous half of a study's path, run in the submitting request."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        audit: AuditLog,
        queue: JobQueue,
        deid: Deid,
        router: Router,
        wake: Wakeup,
        watchers: Watchers,
        backoff_s: float,
        deid_budget_s: float = 20.0,
        risk: ReidentificationRisk | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.sessions, self.store, self.audit, self.queue = sessions, store, audit, queue
        self.deid, self.wake, self.watchers, self.backoff_s = deid, wake, watchers, backoff_s
        self.deid_budget_s, self.router = deid_budget_s, router
        #: Measures each study's re-identification risk and decides generalisation (None: off).
        self.risk = risk
        #: Keeps the original identifiers of tenants with a PACS, sealed (None: no way back).
        self.forwarder = forwarder

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
        fingerprint: str | None = None,
        models: Sequence[str] | None = None,
        headers: Sequence[Header] | None = None,
        leased: bool = False,
    ) -> Accepted:
        """Route the study, de-identify every instance, store the results, and queue one durable job.

        The study, its job and the ``study.create`` audit event (actor ``submitted_by`` with
        ``roles``) commit together; an idempotent replay is audited by the caller. ``watch``: the
        caller will :meth:`wait` for the new study (registered before any worker can finish it).
        ``fingerprint``: of the request (content and options); a key reused with another
        fingerprint is refused (IETF Idempotency-Key draft: 422). ``models``: the models the
        caller already routed the instances to; ``None`` routes them here, from their headers as
        received, and a study no enabled model accepts is refused (:class:`NoModelAccepts`)
        before de-identification: nothing of it is sent, stored or queued, and the refusal is
        audited (``study.refused``: the caller and the rule that refused each model, no study value).
        ``headers``: the instances' headers as the caller already read them (``read_header``).
        ``leased``: the job is stored claimed by this process, for the caller to run at once
        (``core.direct``); no worker is woken for it.

        For a tenant with a PACS, the instances' original identifiers are sealed in its
        re-identification record (``core.forwarder``), committed with the study; they are in
        memory only until then.
        """
        existing = await self.find_idempotent(tenant, idempotency_key)
        if existing is not None:
            return Accepted(same_request(existing, fingerprint), False)
        if models is None:
            with tracer.start_as_current_span("gateway.route") as span:
                headers = await asyncio.to_thread(lambda: [read_header(i) for i in instances])
                route = await asyncio.to_thread(self.router.route, tenant, headers)
                span.set_attribute("sightline.models", list(route.models))
            if not route.accepted:
                ROUTED.labels(REFUSED).inc()
                await self.audit.append(
                    actor=submitted_by,
                    roles=roles,
                    tenant_id=tenant,
                    action=REFUSAL_ACTION,
                    resource_type=REFUSAL_RESOURCE,
                    resource_id=route.codes(),
                    outcome=REFUSAL_OUTCOME,
                    trace_id=current_trace_id(),
                )
                raise route.error()
            models = route.models[:SERVED_PER_STUDY]
            for name in models:
                ROUTED.labels(name).inc()
        if not models:
            raise ValueError("a study needs at least one model")
        original: OriginalStudy | None = None
        if self.forwarder is not None and self.forwarder.keeps(tenant):
            if headers is None or len(headers) != len(instances):
                headers = await asyncio.to_thread(lambda: [read_header(i) for i in instances])
            original = OriginalStudy.from_headers(headers)
        del headers
        study_id = str(uuid.uuid4())
        timings: dict[str, float] = {}
        keys: list[str] = []
        summaries: list[dict[str, Any]] = []
        deid_uid: str | None = None
        deid_deadline = time.monotonic() + self.deid_budget_s  # one budget for all the instances
        placement: Placement | None = None
        try:
            for n, identified in enumerate(instances):
                start = time.perf_counter()
                generalise = placement is not None and placement.generalise
                outcome = await self._deidentify(identified, tenant, deid_deadline, generalise)
                if n == 0 and self.risk is not None and outcome.classes is not None:
                    # The study's class decides, from its first instance, whether it is stored
                    # generalised; the identified bytes are still here to ask deid again.
                    placement = await self.risk.place(tenant, outcome.classes)
                    if placement.generalise:
                        outcome = await self._deidentify(identified, tenant, deid_deadline, True)
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
            await delete_objects(self.store, keys)
            raise
        deid_summary = _merge_summaries(summaries)
        if placement is not None:
            deid_summary["reidentification"] = placement.summary()
        study = Study(
            id=study_id,
            tenant_id=tenant,
            submitted_by=submitted_by,
            status="running" if leased else "queued",
            explain=explain,
            idempotency_key_hash=idempotency_hash(tenant, idempotency_key) if idempotency_key else None,
            request_fingerprint=fingerprint,
            instance_keys=keys,
            models=list(models),
            deid_study_uid=deid_uid,
            deid_summary=deid_summary,
            stage_timings={k: round(v, 2) for k, v in timings.items()},
            trace_id=current_trace_id(),
        )
        try:
            async with self.audit.transaction() as session:
                session.add(study)
                await session.flush()
                if placement is not None:
                    session.add(ReidentificationRisk.row(study_id, tenant, placement))
                if original is not None and self.forwarder is not None:
                    session.add(self.forwarder.record(tenant, study_id, original))
                job = self.queue.new_job(study_id, leased=leased)
                session.add(job)
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
        except IntegrityError:
            # A concurrent request with the same idempotency key stored its study first.
            await delete_objects(self.store, keys)
            again = await self.find_idempotent(tenant, idempotency_key)
            if again is None:
                raise
            return Accepted(same_request(again, fingerprint), False)
        except BaseException:
            # Nothing half-written: the database did not take the study, so drop its objects.
            await delete_objects(self.store, keys)
            raise
        if watch:
            self.watchers.watch(study_id)
        if leased:
            return Accepted(study, True, job)
        self.wake.notify()
        return Accepted(study, True)

    async def _deidentify(
        self, identified: bytes, tenant: str, deadline: float, generalise: bool
    ) -> DeidOutcome:
        """One instance through deid, retried until ``deadline`` (then 503: nothing was stored)."""
        with tracer.start_as_current_span("gateway.deid") as span:
            span.set_attribute("sightline.instance_bytes", len(identified))
            span.set_attribute("sightline.deid.generalised", generalise)
            call = functools.partial(self.deid.deidentify, identified, tenant)
            if generalise:
                call = functools.partial(self.deid.deidentify, identified, tenant, generalise=True)
            try:
                return await call_with_retry(
                    call,
                    deadline=deadline,
                    backoff_s=DEID_BACKOFF_FACTOR * self.backoff_s,
                    max_backoff_s=DEID_BACKOFF_MAX_S,
                    stage="deid",
                )
            except DependencyUnavailable as exc:
                raise DependencyUnavailable(
                    f"{exc.detail}; nothing was stored: retry with the same Idempotency-Key",
                    retry_after=DEID_RETRY_AFTER_S,
                ) from exc

    async def wait(self, study_id: str, timeout_s: float, study: Study | None = None) -> Study:
        """Wait (bounded) until the study is completed or failed; return it either way.

        ``study``: the study as :meth:`accept` (with ``watch``) just stored it, so not read again
        before the worker's first report; when its job ran in this process (``core.direct``),
        the run's end is mirrored on it after its commit and it is answered without a read.
        """
        registered = study is not None and self.watchers.watched(study_id)
        event = self.watchers.watch(study_id)
        current = study if registered else None
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if current is None:
                    if registered and study is not None and study.status in ("completed", "failed"):
                        return study
                    event.clear()  # a report after this read wakes the next wait
                    current = await self.get_study(study_id)
                if (
                    current.status in ("completed", "failed")
                    or time.monotonic() >= deadline
                    or self.watchers.closing
                ):
                    return current
                try:
                    await asyncio.wait_for(event.wait(), min(0.5, max(0.01, deadline - time.monotonic())))
                except TimeoutError:
                    pass
                current = None
        finally:
            self.watchers.forget(study_id)

    async def get_study(self, study_id: str) -> Study:
        async with self.sessions() as session:
            study = await session.get(Study, study_id)
        if study is None:
            raise NotFound("study not found")
        return study


def same_request(study: Study, fingerprint: str | None) -> Study:
    """``study`` when the request that reuses its Idempotency-Key is the same one; else 422."""
    if fingerprint and study.request_fingerprint and fingerprint != study.request_fingerprint:
        raise UnprocessableInput(
            "Idempotency-Key was already used for a different request (other content or options); "
            "use a new key for a new study",
            reason="idempotency-key-reused",
        )
    return study


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
