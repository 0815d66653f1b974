"""A study no enabled model accepts leaves nothing behind: PostgreSQL and the S3 API server checked."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from sightline_common.storage import S3Store
from sightline_gateway.db.engine import make_engine
from sqlalchemy import text

from tests.conftest import skip_or_fail_in_ci
from tests.integration.gateway.conftest import PG_URL, drop_schema
from tests.unit.gateway.gateway_fixtures import FakeExplain, harness, token
from tests.unit.gateway.routing_fixtures import CHEST, DERM, chest_xray, ct_slice, repository
from tests.unit.gateway.test_gateway_routing_api import CountingDeid

pytestmark = pytest.mark.integration


async def _counts(schema: str) -> dict[str, int]:
    engine = make_engine(PG_URL, schema)
    try:
        async with engine.connect() as conn:
            return {
                table: int(
                    (await conn.execute(text(f'SELECT count(*) FROM "{schema}".{table}'))).scalar_one()
                )
                for table in ("studies", "jobs", "results")
            }
    finally:
        await engine.dispose()


async def _reachable() -> None:
    engine = make_engine(PG_URL)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def test_a_ct_refused_by_routing_leaves_no_row_no_object_and_no_deid_call(
    s3_endpoint: str, tmp_path: Path
) -> None:
    import asyncpg  # noqa: F401 - the driver the URL names

    try:
        asyncio.run(_reachable())
    except OSError:
        skip_or_fail_in_ci("PostgreSQL not reachable at 127.0.0.1:5432")
    schema = "gw_route_" + secrets.token_hex(6)
    bucket = "sightline-route-" + secrets.token_hex(4)
    store = S3Store(s3_endpoint, "test", "test", bucket, secure=False)
    store.ensure_bucket()
    try:
        with harness(
            tmp_path,
            PG_URL,
            database_schema=schema,
            model_repository=repository(tmp_path),
            models=[DERM, CHEST],
        ) as h:
            gw = h.client.app.state.gateway  # type: ignore[attr-defined]
            gw.store = gw.pipeline.store = store
            gw.pipeline.explain = FakeExplain(store)
            deid = gw.pipeline.intake.deid = CountingDeid(gw.pipeline.intake.deid)
            r = h.submit(ct_slice(), mode="sync")
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "no-model-accepts"
            assert asyncio.run(_counts(schema)) == {"studies": 0, "jobs": 0, "results": 0}
            assert store.list("studies/") == []
            assert deid.calls == 0
            # The same gateway stores and runs a radiograph: the refusal was routing, not a fault.
            ok = h.submit(chest_xray(), mode="sync")
            assert ok.status_code == 200, ok.text
            assert ok.json()["model"]["name"] == CHEST
            assert asyncio.run(_counts(schema)) == {"studies": 1, "jobs": 1, "results": 1}
            assert store.list("studies/") != []
            assert h.client.get(ok.headers["Location"], headers=token()).json()["models"] == [CHEST]
    finally:
        asyncio.run(drop_schema(PG_URL, schema))
