"""Retention: the de-identified images, heatmaps and re-identification records of old studies are
deleted; results (and their delivery status) stay."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sightline_common.storage import ObjectStore
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.objects import delete_objects, study_prefix
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.deliveries import purge_record
from sightline_gateway.db.jobs import NO_SYNC, SYSTEM
from sightline_gateway.db.models import Study, utcnow

log = logging.getLogger(__name__)

BATCH = 500


class Retention:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], store: ObjectStore, audit: AuditLog
    ) -> None:
        self.sessions, self.store, self.audit = sessions, store, audit

    async def purge_expired(self, older_than: timedelta) -> int:
        """Delete the de-identified images, heatmaps and re-identification records of finished studies
        older than ``older_than``."""
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
                    .limit(BATCH)
                )
            ).all()
        for study in studies:
            keys = [k for k, _ in await asyncio.to_thread(self.store.list, study_prefix(study.id))]
            await delete_objects(self.store, keys)
            now = utcnow()
            async with self.sessions() as session, session.begin():
                await purge_record(session, study.id)
                await session.execute(
                    update(Study)
                    .where(Study.id == study.id)
                    .values(purged_at=now, updated_at=now)
                    .execution_options(**NO_SYNC)
                )
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

    async def run(self, stop: asyncio.Event, older_than: timedelta, interval_s: float) -> None:
        """Purge every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.purge_expired(older_than)
            except Exception as exc:  # noqa: BLE001 - retry at the next interval
                log.error("retention pass failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
