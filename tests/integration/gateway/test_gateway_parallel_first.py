"""Issue 13: 16 parallel first requests of a new API client, and 16 with one Idempotency-Key.

0 server errors, one study per key; against SQLite and PostgreSQL (127.0.0.1:5432, trust auth,
database ``test``, a fresh schema per test).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from sightline_gateway.db.models import Job, Study
from sqlalchemy import func, select

from tests.integration.gateway.test_gateway_tenants import database  # noqa: F401 - fixture
from tests.unit.gateway.gateway_fixtures import harness, phi_dicom, token

pytestmark = pytest.mark.integration
PARALLEL = 16


def _parallel(h: Any, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=h.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/studies", **r) for r in requests))

    return h.client.portal.call(go)  # type: ignore[no-any-return]


def _count(h: Any, model: Any) -> int:
    gw = h.client.app.state.gateway

    async def count() -> int:
        async with gw.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    return h.client.portal.call(count)  # type: ignore[no-any-return]


def test_parallel_first_requests_of_a_new_api_client_all_succeed(
    database: tuple[str | None, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, overrides = database
    with harness(tmp_path, url, **overrides) as h:
        tenant = "hospital-api-" + secrets.token_hex(3)
        created = h.client.post(
            "/v1/api-clients",
            json={"name": "ris", "roles": ["submitter"]},
            headers=token(tenant=tenant, roles=("admin",)),
        )
        assert created.status_code == 201, created.text
        headers = {"Content-Type": "application/dicom", "X-API-Key": created.json()["api_key"]}
        responses = _parallel(
            h, [{"content": phi_dicom(seed=n), "headers": headers} for n in range(PARALLEL)]
        )
        assert [r.status_code for r in responses] == [202] * PARALLEL, [r.text[:200] for r in responses]
        assert len({r.json()["id"] for r in responses}) == PARALLEL


def test_parallel_requests_with_one_idempotency_key_make_one_study(
    database: tuple[str | None, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, overrides = database
    with harness(tmp_path, url, **overrides) as h:
        tenant = "hospital-key-" + secrets.token_hex(3)  # a new tenant as well
        headers = {"Content-Type": "application/dicom", "Idempotency-Key": "ris-4711", **token(tenant=tenant)}
        body = phi_dicom(seed=7)
        responses = _parallel(h, [{"content": body, "headers": headers} for _ in range(PARALLEL)])
        codes = [r.status_code for r in responses]
        assert all(c == 202 for c in codes), [r.text[:200] for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        assert _count(h, Study) == 1 and _count(h, Job) == 1
