"""Shared by the gateway's integration tests: a real S3 API server, the PostgreSQL URL, whether it
answers, and schema clean-up."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

if not isinstance(trace.get_tracer_provider(), TracerProvider):
    trace.set_tracer_provider(TracerProvider())

#: The machine's PostgreSQL (trust auth, database ``test``); each test works in a schema of its own.
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP on a free loopback port (``host:port``)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


async def drop_schema(url: str, schema: str) -> None:
    """Drop a test's PostgreSQL schema and everything in it (no error when it is not there)."""
    from sightline_gateway.db.engine import make_engine
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


async def pg_reachable(url: str = PG_URL) -> bool:
    """Whether PostgreSQL answers at ``url`` (a test then skips, or fails under CI=true, when not)."""
    from sightline_gateway.db.engine import make_engine
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except OSError:
        return False
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[object, str | None]]:
    """(engine, schema): a migrated SQLite file, then a fresh PostgreSQL schema dropped after."""
    from sightline_gateway.db.engine import make_engine, migrate
    from sqlalchemy import text

    from tests.conftest import skip_or_fail_in_ci

    if request.param == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        schema = None
    else:
        if not await pg_reachable():
            skip_or_fail_in_ci("PostgreSQL not reachable at 127.0.0.1:5432")
        schema = "gw_test_" + secrets.token_hex(6)
        engine = make_engine(PG_URL, schema)
    await migrate(engine, schema)
    await migrate(engine, schema)  # idempotent at every start
    yield engine, schema
    if schema:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()
