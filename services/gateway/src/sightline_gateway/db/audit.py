"""Appending to and reading the hash-chained audit log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sightline_common.storage import ObjectStore
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.audit import GENESIS, ChainReport, event_hash, verify
from sightline_gateway.core.audit_anchors import AuditAnchors
from sightline_gateway.db.models import AuditEvent, utcnow

# One writer at a time per log; PostgreSQL adds a transaction-scoped advisory lock so that
# several gateway replicas append to one chain without forking it.
_PG_LOCK_KEY = 0x5167_4C69_6E65  # "SightLine"


class AuditLog:
    """Append events and verify the chain (against its anchor outside the database, given a store)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: ObjectStore | None = None) -> None:
        self.sessions = sessions
        self._lock = asyncio.Lock()
        self.anchors = AuditAnchors(store, self.head) if store is not None else None

    async def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest event, ``None`` for an empty log."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
                )
            ).first()
        return (int(row[0]), str(row[1])) if row else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A transaction that may append to the chain with :meth:`add` beside other writes.

        The chain's head is read and extended under this process's lock (and PostgreSQL's
        advisory lock) held until commit, so the events commit with those writes or not at all.
        Put other writes first: on SQLite they take the write lock before the head is read.
        """
        async with self._lock, self.sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            yield session

    async def add(
        self,
        session: AsyncSession,
        *,
        actor: str,
        roles: Sequence[str],
        tenant_id: str | None,
        action: str,
        resource_type: str,
        resource_id: str | None,
        outcome: str = "success",
        trace_id: str | None = None,
    ) -> AuditEvent:
        """Append one event inside a session opened by :meth:`transaction`."""
        last = (
            await session.execute(
                select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
            )
        ).first()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        fields: dict[str, Any] = {
            "seq": seq,
            "id": str(uuid.uuid4()),
            "at": utcnow(),
            "tenant_id": tenant_id,
            "actor": actor,
            "roles": sorted(roles),
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "outcome": outcome,
            "trace_id": trace_id,
            "prev_hash": prev,
        }
        event = AuditEvent(**fields, hash=event_hash(fields))
        session.add(event)
        await session.flush()
        return event

    async def append(
        self,
        *,
        actor: str,
        roles: Sequence[str],
        tenant_id: str | None,
        action: str,
        resource_type: str,
        resource_id: str | None,
        outcome: str = "success",
        trace_id: str | None = None,
    ) -> AuditEvent:
        """Append one event in its own transaction."""
        async with self.transaction() as session:
            return await self.add(
                session,
                actor=actor,
                roles=roles,
                tenant_id=tenant_id,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                outcome=outcome,
                trace_id=trace_id,
            )

    async def query(
        self,
        *,
        tenant_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditEvent]:
        stmt = select(AuditEvent).where(AuditEvent.seq > after_seq)
        if tenant_id is not None:
            stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
        if action:
            stmt = stmt.where(AuditEvent.action == action)
        if actor:
            stmt = stmt.where(AuditEvent.actor == actor)
        if resource_id:
            stmt = stmt.where(AuditEvent.resource_id == resource_id)
        if since:
            stmt = stmt.where(AuditEvent.at >= since)
        if until:
            stmt = stmt.where(AuditEvent.at < until)
        async with self.sessions() as session:
            return list((await session.scalars(stmt.order_by(AuditEvent.seq).limit(limit))).all())

    async def count(self) -> int:
        async with self.sessions() as session:
            return int((await session.scalar(select(func.count()).select_from(AuditEvent))) or 0)

    async def verify(self, batch: int = 1000) -> ChainReport:
        """Walk the whole chain in ``seq`` order, in batches, and check it still holds its anchor."""
        anchor = await self.anchors.latest() if self.anchors is not None else None

        async def rows() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            after = 0
            async with self.sessions() as session:
                while True:
                    page = (
                        await session.scalars(
                            select(AuditEvent)
                            .where(AuditEvent.seq > after)
                            .order_by(AuditEvent.seq)
                            .limit(batch)
                        )
                    ).all()
                    if not page:
                        return out
                    out.extend({c: getattr(e, c) for c in _COLUMNS} for e in page)
                    after = page[-1].seq

        return verify(await rows(), anchor=anchor)


_COLUMNS = [c.name for c in AuditEvent.__table__.columns]
