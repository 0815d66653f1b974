"""Tenant administration: API keys for machine clients (admin role)."""

from __future__ import annotations

from fastapi import APIRouter

from sightline_gateway.api.deps import GW, Caller
from sightline_gateway.api.problems import ERRORS
from sightline_gateway.api.schemas import ApiClientIn, ApiClientOut
from sightline_gateway.core.auth import Role, new_api_key
from sightline_gateway.db.models import ApiClient

router = APIRouter()


@router.post("/api-clients", status_code=201, response_model=ApiClientOut, tags=["admin"], responses=ERRORS)
async def create_api_client(body: ApiClientIn, gw: GW, who: Caller) -> ApiClientOut:
    """Create an API key for a machine client of your tenant (admin role); the key is shown once."""
    who.require(Role.ADMIN)
    client_id, key, digest = new_api_key()
    roles = sorted({r.value for r in body.roles})
    async with gw.sessions() as session, session.begin():
        session.add(
            ApiClient(id=client_id, tenant_id=who.tenant, name=body.name, key_hash=digest, roles=roles)
        )
    await gw.record(who, "api-client.create", "api-client", client_id)
    return ApiClientOut(client_id=client_id, tenant=who.tenant, roles=roles, api_key=key)
