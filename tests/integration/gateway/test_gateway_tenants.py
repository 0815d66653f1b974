"""A tenant is created on first use: parallel first requests of a new tenant must all succeed.

They used to race to insert the tenant's row (three 500s out of four); against SQLite and
PostgreSQL (127.0.0.1:5432, trust auth, database ``test``, a fresh schema per test).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sightline_gateway.db.models import Tenant
from sqlalchemy import func, select

from tests.conftest import skip_or_fail_in_ci
from tests.integration.gateway.conftest import PG_URL, drop_schema, pg_reachable
from tests.unit.gateway.gateway_fixtures import harness, phi_dicom, token

pytestmark = pytest.mark.integration
PARALLEL = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, dict[str, Any]]]:
    if request.param == "sqlite":
        yield None, {}
        return
    if not asyncio.run(pg_reachable()):
        skip_or_fail_in_ci("PostgreSQL not reachable at 127.0.0.1:5432")
    schema = "gw_tenant_" + secrets.token_hex(6)
    try:
        yield PG_URL, {"database_schema": schema}
    finally:
        asyncio.run(drop_schema(PG_URL, schema))


def test_parallel_first_requests_of_a_new_tenant_all_succeed(
    database: tuple[str | None, dict[str, Any]], tmp_path: Path
) -> None:
    url, overrides = database
    tenant = "hospital-new-" + secrets.token_hex(3)
    headers = {"Content-Type": "application/dicom", **token(tenant=tenant)}
    with harness(tmp_path, url, **overrides) as h:
        app = h.client.app
        gw = app.state.gateway  # type: ignore[attr-defined]

        async def first_requests() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v1/studies", params={"mode": "sync"}, content=phi_dicom(seed=n), headers=headers
                        )
                        for n in range(PARALLEL)
                    )
                )

        async def tenant_rows() -> int:
            async with gw.sessions() as session:
                return int(await session.scalar(select(func.count()).where(Tenant.id == tenant)) or 0)

        responses = h.client.portal.call(first_requests)  # type: ignore[union-attr]
        assert [r.status_code for r in responses] == [200] * PARALLEL, [r.text[:200] for r in responses]
        assert len({r.json()["study_id"] for r in responses}) == PARALLEL
        assert h.client.portal.call(tenant_rows) == 1  # type: ignore[union-attr]
