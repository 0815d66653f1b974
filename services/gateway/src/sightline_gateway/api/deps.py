"""Request-scoped dependencies: the gateway's state, the authenticated caller, the caller's study."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sightline_common.errors import NotFound, Unauthorised
from sightline_common.manifest import ModelManifest
from sightline_common.storage import ObjectStore
from sightline_common.telemetry import current_trace_id
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.auth import Principal, TokenVerifier, api_key_matches, parse_api_key, valid_roles
from sightline_gateway.core.limits import RateLimiter, UrlSigner
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.lifecycle import Lifecycle
from sightline_gateway.db.models import ApiClient, Study
from sightline_gateway.db.tenants import ensure_tenant
from sightline_gateway.pipeline import Pipeline
from sightline_gateway.settings import GatewaySettings


@dataclass
class Gateway:
    """Everything the routes need, built once by ``create_app``."""

    settings: GatewaySettings
    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore
    audit: AuditLog
    pipeline: Pipeline
    verifier: TokenVerifier
    limiter: RateLimiter
    signer: UrlSigner
    lifecycle: Lifecycle
    known_tenants: set[str] = field(default_factory=set)

    async def ensure_tenant(self, tenant: str) -> None:
        """Tenants named by a valid token from the configured issuer exist from first use."""
        if tenant in self.known_tenants:
            return
        await ensure_tenant(self.sessions, tenant)
        self.known_tenants.add(tenant)

    def manifest(self, name: str) -> ModelManifest | None:
        """A model's manifest, ``None`` when the repository has no (valid) one."""
        try:
            return self.pipeline.manifests.get(name)
        except (NotFound, OSError, ValueError):
            return None

    async def own_study(self, who: Principal, study_id: str, action: str) -> Study:
        """The caller's tenant's study, else 404 (another tenant's study is indistinguishable from none)."""
        async with self.sessions() as session:
            study = await session.get(Study, study_id)
        if study is None or study.tenant_id != who.tenant:
            await self.record(who, action, "study", study_id, outcome="not-found")
            raise NotFound("study not found")
        return study

    async def record(
        self,
        who: Principal,
        action: str,
        resource_type: str,
        resource_id: str | None,
        outcome: str = "success",
    ) -> None:
        await self.audit.append(
            actor=who.subject,
            roles=sorted(who.roles),
            tenant_id=who.tenant,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            outcome=outcome,
            trace_id=current_trace_id(),
        )


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


_bearer = HTTPBearer(auto_error=False, description="OIDC/JWT access token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key of a machine client")


async def principal(
    gw: Annotated[Gateway, Depends(gateway)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """The authenticated caller (bearer token or API key), rate limited per client."""
    if bearer is not None and bearer.scheme.lower() == "bearer" and bearer.credentials:
        who = gw.verifier.verify(bearer.credentials)
        await gw.ensure_tenant(who.tenant)
    elif api_key:
        client_id = parse_api_key(api_key)
        async with gw.sessions() as session:
            client = await session.scalar(select(ApiClient).where(ApiClient.id == client_id))
        if client is None or client.revoked_at is not None or not api_key_matches(api_key, client.key_hash):
            raise Unauthorised("unknown or revoked API key")
        who = Principal(
            f"api-client:{client.id}", client.tenant_id, valid_roles(list(client.roles)), "api-key"
        )
    else:
        raise Unauthorised("authentication required (Authorization: Bearer <token> or X-API-Key)")
    await gw.limiter.check(who.client_id)
    return who


Caller = Annotated[Principal, Depends(principal)]
GW = Annotated[Gateway, Depends(gateway)]
StudyId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="study id")]
