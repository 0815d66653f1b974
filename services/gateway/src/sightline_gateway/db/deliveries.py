"""Durable deliveries of results to tenants' PACS, claimed under a lease like the job queue's jobs.

A delivery row is written in the transaction that stores the study's result, so a gateway that
stops before (or while) sending keeps it: another replica, or this one after a restart, claims it
once its lease has expired. Its end (delivered or failed) is audited with the study id only.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sightline_common.telemetry import current_trace_id
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.jobs import NO_SYNC, SYSTEM
from sightline_gateway.db.models import Delivery, ReidentificationRecord, Result, Study, utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: The audit action of a delivery's end; resource: the study id (``result.deliver``, outcome).
DELIVER_ACTION = "result.deliver"


def new_delivery(study_id: str, tenant_id: str, destination: str) -> Delivery:
    now = utcnow()
    return Delivery(
        study_id=study_id,
        tenant_id=tenant_id,
        destination=destination,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


class Deliveries:
    """Claims, reschedules and ends deliveries; ``worker_id`` owns the leases this process takes."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog, *, lease_s: float
    ) -> None:
        self.sessions, self.audit, self.lease_s = sessions, audit, lease_s
        self.worker_id = uuid.uuid4().hex[:16]

    async def claim(self) -> Delivery | None:
        """One due pending delivery under a lease (a conditional UPDATE makes the claim exclusive)."""
        now = utcnow()
        free = or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now)
        async with self.sessions() as session, session.begin():
            due = (
                await session.scalars(
                    select(Delivery.study_id)
                    .where(Delivery.status == PENDING, Delivery.next_attempt_at <= now, free)
                    .order_by(Delivery.next_attempt_at)
                    .limit(8)
                )
            ).all()
            for study_id in due:
                claimed = await session.execute(
                    update(Delivery)
                    .where(Delivery.study_id == study_id, Delivery.status == PENDING, free)
                    .values(
                        lease_owner=self.worker_id,
                        lease_expires_at=now + timedelta(seconds=self.lease_s),
                        updated_at=now,
                    )
                    .execution_options(**NO_SYNC)
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return await session.get(Delivery, study_id, populate_existing=True)
        return None

    async def load(self, study_id: str) -> tuple[Study | None, list[Result], ReidentificationRecord | None]:
        """What a delivery sends: the study, its results (one per model, in routing order) and its
        sealed re-identification record."""
        async with self.sessions() as session:
            study = await session.get(Study, study_id)
            results = (
                await session.scalars(
                    select(Result)
                    .where(Result.study_id == study_id)
                    .order_by(Result.position, Result.model_name)
                )
            ).all()
            record = await session.get(ReidentificationRecord, study_id)
        return study, list(results), record

    async def later(self, delivery: Delivery, delay_s: float, reason: str | None, *, attempted: bool) -> None:
        """Release the lease; due again after ``delay_s`` (``attempted``: count a failed send)."""
        now = utcnow()
        values: dict[str, object] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": now + timedelta(seconds=delay_s),
            "updated_at": now,
        }
        if attempted:
            values.update(attempts=Delivery.attempts + 1, last_error=(reason or "")[:500])
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.study_id == delivery.study_id, Delivery.lease_owner == self.worker_id)
                .values(**values)
                .execution_options(**NO_SYNC)
            )

    async def end(self, delivery: Delivery, status: str, reason: str | None = None) -> None:
        """Mark the delivery delivered or failed after one more attempt, and audit it."""
        now = utcnow()
        async with self.audit.transaction() as session:
            await session.execute(
                update(Delivery)
                .where(Delivery.study_id == delivery.study_id)
                .values(
                    status=status,
                    attempts=Delivery.attempts + 1,
                    last_error=reason[:500] if reason else None,
                    lease_owner=None,
                    lease_expires_at=None,
                    delivered_at=now if status == DELIVERED else None,
                    updated_at=now,
                )
                .execution_options(**NO_SYNC)
            )
            await self.audit.add(
                session,
                actor=SYSTEM,
                roles=[],
                tenant_id=delivery.tenant_id,
                action=DELIVER_ACTION,
                resource_type="delivery",
                resource_id=delivery.study_id,
                outcome="success" if status == DELIVERED else "failure",
                trace_id=current_trace_id(),
            )

    async def requeue(self, study_id: str, who: str, roles: list[str], trace_id: str | None) -> bool:
        """Make a failed delivery pending again, due now with a fresh retry budget, audited
        (``result.redeliver``); ``False`` when it is not failed (pending or delivered)."""
        now = utcnow()
        async with self.audit.transaction() as session:
            requeued = await session.execute(
                update(Delivery)
                .where(Delivery.study_id == study_id, Delivery.status == FAILED)
                .values(
                    status=PENDING,
                    next_attempt_at=now,
                    created_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
                .execution_options(**NO_SYNC)
            )
            if requeued.rowcount != 1:  # type: ignore[attr-defined]
                return False
            delivery = await session.get(Delivery, study_id)
            assert delivery is not None
            await self.audit.add(
                session,
                actor=who,
                roles=roles,
                tenant_id=delivery.tenant_id,
                action="result.redeliver",
                resource_type="delivery",
                resource_id=study_id,
                trace_id=trace_id,
            )
        return True

    async def status_of(self, study_id: str) -> Delivery | None:
        async with self.sessions() as session:
            return await session.get(Delivery, study_id)


def delivery_body(delivery: Delivery) -> dict[str, object]:
    """The ``delivery`` of a REST result: status, attempts and the destination's name."""
    return {
        "status": delivery.status,
        "attempts": delivery.attempts,
        "destination": delivery.destination,
        "delivered_at": _iso(delivery.delivered_at),
        "last_error": delivery.last_error if delivery.status != DELIVERED else None,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def purge_record(session: AsyncSession, study_id: str) -> None:
    """Delete a study's re-identification record (retention)."""
    await session.execute(
        delete(ReidentificationRecord)
        .where(ReidentificationRecord.study_id == study_id)
        .execution_options(**NO_SYNC)
    )
