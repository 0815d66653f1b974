"""Engine, sessions and migrations (Alembic, at start-up or by the Helm hook Job)."""

from __future__ import annotations

import re
from typing import Any

from alembic import command
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from sightline_gateway.db.migrations import MIGRATION_LOCK_ID, alembic_config, refuse_newer, require_head

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


CONNECT_TIMEOUT_S = 5.0

#: What reaches a request when the database cannot be reached: the driver's connection errors
#: (asyncpg raises them unwrapped while connecting) and SQLAlchemy's connection-level errors.
UNREACHABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def make_engine(url: str, schema: str | None = None) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout, PostgreSQL a search_path.

    SQLite keeps ``synchronous`` at its default (FULL): a commit costs a fraction of a millisecond
    here, too little to trade a power loss's last commits for. Pre-ping is for network
    connections that a server may drop; a SQLite file cannot, so it would only add a round trip
    to aiosqlite's thread on every checkout.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        # A database that does not answer fails a request in seconds (503), not asyncpg's 60 s.
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
        if schema:
            kwargs["connect_args"]["server_settings"] = {"search_path": schema}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _upgrade(connection: Connection, schema: str | None, revision: str) -> None:
    refuse_newer(connection, schema)
    command.upgrade(alembic_config(connection, schema), revision)


async def migrate(engine: AsyncEngine, schema: str | None = None, revision: str = "head") -> None:
    """Bring the database to ``revision`` (idempotent); :class:`SchemaMismatch` on a newer schema.

    Takes no lock: callers that may run concurrently use :func:`prepare_schema` (or the hook
    Job's own lock, charts/sightline/files/migrate.py).
    """
    async with engine.begin() as conn:
        if schema and conn.dialect.name == "postgresql":
            if not _SCHEMA.fullmatch(schema):
                raise ValueError("invalid database schema name")
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(_upgrade, schema, revision)


async def prepare_schema(engine: AsyncEngine, schema: str | None, migrate_on_start: bool) -> None:
    """At start-up: migrate under the PostgreSQL advisory lock the hook Job also takes, or, when
    the hook Job migrates (``migrate_on_start`` false), only check that the schema is at our head.

    Raises :class:`SchemaMismatch` (the gateway does not start) on a schema newer than ours, and
    without ``migrate_on_start`` on one that is not at our head.
    """
    if not migrate_on_start:
        async with engine.connect() as conn:
            await conn.run_sync(require_head, schema)
        return
    async with engine.connect() as lock:
        postgres = lock.dialect.name == "postgresql"
        if postgres:
            await lock.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            await lock.commit()
        try:
            await migrate(engine, schema)
        finally:
            if postgres:
                await lock.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                await lock.commit()
