"""The tenant's audit trail and verification of the hash chain (auditor role)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sightline_common.errors import InvalidInput

from sightline_gateway.api.deps import GW, Caller
from sightline_gateway.api.problems import ERRORS
from sightline_gateway.api.schemas import AuditEventOut, AuditPage, ChainOut
from sightline_gateway.core.auth import Role

router = APIRouter()


@router.get("/audit", response_model=AuditPage, tags=["audit"], responses=ERRORS)
async def get_audit(
    gw: GW,
    who: Caller,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Audit events of your tenant (auditor role), oldest first, paged by ``after_seq``."""
    who.require(Role.AUDITOR)
    for value in (since, until):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("since/until need a timezone (e.g. Z)")
    events = await gw.audit.query(
        tenant_id=who.tenant,
        action=action,
        actor=actor,
        resource_id=resource_id,
        since=since,
        until=until,
        after_seq=after_seq,
        limit=limit,
    )
    await gw.record(who, "audit.read", "audit", None)
    out = [AuditEventOut.model_validate(e, from_attributes=True) for e in events]
    return AuditPage(events=out, next_after_seq=out[-1].seq if len(out) == limit else None)


@router.get("/audit/verify", response_model=ChainOut, tags=["audit"], responses=ERRORS)
async def verify_audit(gw: GW, who: Caller) -> ChainOut:
    """Verify the whole hash chain: any altered, deleted or reordered event is reported."""
    who.require(Role.AUDITOR)
    report = await gw.audit.verify()
    await gw.record(who, "audit.verify", "audit", None, outcome="success" if report.ok else "failure")
    return ChainOut(ok=report.ok, events=report.events, head=report.head, problems=report.problems)
