"""Tenants: created on first use by an authenticated caller."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.db.models import Tenant, utcnow


async def ensure_tenant(sessions: async_sessionmaker[AsyncSession], tenant: str) -> None:
    """Create the tenant unless it exists: one upsert, so concurrent first requests all succeed."""
    async with sessions() as session, session.begin():
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        await session.execute(
            insert(Tenant)
            .values(id=tenant, name=tenant, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[Tenant.id])
        )
