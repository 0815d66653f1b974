"""Issue 14: the gateway refuses a database schema newer than it knows, and start-up migrations
take turns with the Helm hook Job (one PostgreSQL advisory lock) or are left to it.

Against SQLite and PostgreSQL (127.0.0.1:5432, trust auth, database ``test``, a fresh schema).
"""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Any

import pytest
from sightline_gateway.db.engine import make_engine, migrate, prepare_schema
from sightline_gateway.db.migrations import MIGRATION_LOCK_ID, SchemaMismatch
from sqlalchemy import text

from tests.integration.gateway.test_gateway_tenants import PG_URL, database  # noqa: F401 - fixture
from tests.unit.gateway.gateway_fixtures import harness

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _url(db: tuple[str | None, dict[str, Any]], tmp: Path) -> tuple[str, str | None]:
    url, overrides = db
    return url or f"sqlite+aiosqlite:///{tmp / 'gateway.db'}", overrides.get("database_schema")


async def _stamp(url: str, schema: str | None, revision: str) -> None:
    engine = make_engine(url, schema)
    await migrate(engine, schema)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    await engine.dispose()


@pytest.mark.parametrize("migrate_on_start", [True, False])
def test_a_schema_newer_than_the_gateway_is_refused_with_the_reason(
    database: tuple[str | None, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
    migrate_on_start: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, schema = _url(database, tmp_path)
    asyncio.run(_stamp(url, schema, "9999_from_a_newer_release"))
    with (
        pytest.raises(SchemaMismatch, match=r"9999_from_a_newer_release, newer than this gateway knows"),
        harness(tmp_path, url, migrate_on_start=migrate_on_start, **database[1]),
    ):
        pass
    assert "refusing to start: database schema is at revision 9999" in caplog.text


def test_without_migrate_on_start_the_gateway_needs_the_hook_job_to_have_run(
    database: tuple[str | None, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, schema = _url(database, tmp_path)
    with (
        pytest.raises(SchemaMismatch, match="run the migration Job"),
        harness(tmp_path, url, migrate_on_start=False, **database[1]),
    ):
        pass

    async def hook_job() -> None:
        engine = make_engine(url, schema)
        await migrate(engine, schema)
        await engine.dispose()

    asyncio.run(hook_job())
    with harness(tmp_path, url, migrate_on_start=False, **database[1]) as h:
        assert h.client.get("/health/ready").status_code == 200


def test_start_up_migrations_wait_for_the_hook_jobs_lock(
    database: tuple[str | None, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, schema = _url(database, tmp_path)
    if not url.startswith("postgresql"):
        # SQLite has no advisory locks and one writer: start-up migrates without waiting.
        async def alone() -> None:
            engine = make_engine(url, schema)
            try:
                await asyncio.wait_for(prepare_schema(engine, schema, migrate_on_start=True), 60)
                async with engine.connect() as conn:
                    assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            finally:
                await engine.dispose()

        asyncio.run(alone())
        return

    async def go() -> None:
        holder, gateway = make_engine(url, schema), make_engine(url, schema)
        try:
            async with holder.connect() as job:  # the hook Job, mid-migration
                await job.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
                start = asyncio.create_task(prepare_schema(gateway, schema, migrate_on_start=True))
                await asyncio.sleep(1.0)
                assert not start.done(), "the gateway migrated while the hook Job held the lock"
                await job.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                await asyncio.wait_for(start, 60)
        finally:
            await holder.dispose()
            await gateway.dispose()

    asyncio.run(go())


def test_the_gateway_and_the_hook_job_share_one_lock_id() -> None:
    job = runpy.run_path(str(ROOT / "charts" / "sightline" / "files" / "migrate.py"), run_name="not-main")
    assert job["LOCK_ID"] == MIGRATION_LOCK_ID
