"""Engine, sessions and migrations (Alembic, run at start-up)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


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
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, schema: str | None = None, revision: str = "head") -> None:
    """Bring the database to ``revision`` (idempotent; run at every start)."""
    async with engine.begin() as conn:
        if schema and conn.dialect.name == "postgresql":
            if not _SCHEMA.fullmatch(schema):
                raise ValueError("invalid database schema name")
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(_upgrade, schema, revision)
