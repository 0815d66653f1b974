"""Model lifecycle (admin role): promote a candidate version through the gates, or roll back.

Every request is decided and recorded, refused or not: the decision, both evaluation reports'
sha256 and the actor are stored with an audit event naming the record's hash.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from sightline_common.errors import Forbidden, NotFound, SightlineError
from sightline_common.telemetry import current_trace_id

from sightline_gateway.api.deps import GW, Caller, Gateway
from sightline_gateway.api.problems import ERRORS
from sightline_gateway.api.schemas import GateOut, ModelDecisionOut, ModelVersionsOut, PromotionIn, RollbackIn
from sightline_gateway.core.auth import Principal, Role
from sightline_gateway.db.lifecycle import PROMOTE, ROLLBACK

router = APIRouter()

ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {
        "description": "refused: a gate failed (the body names each gate and why)",
        "model": ModelDecisionOut,
    },
}


def _platform_admin(gw: Gateway, who: Principal) -> None:
    who.require(Role.ADMIN)
    allowed = gw.settings.lifecycle_admin_tenant
    if allowed is not None and who.tenant != allowed:
        raise Forbidden("models are promoted by the platform tenant's admins")


async def _decide(gw: Gateway, who: Principal, action: str, name: str, version: int | None) -> JSONResponse:
    try:
        _platform_admin(gw, who)
        if name not in gw.settings.models:
            raise NotFound("model not found")
        decision, record, digest = await gw.lifecycle.decide(
            action=action,
            model=name,
            version=version,
            actor=who.subject,
            roles=sorted(who.roles),
            tenant=who.tenant,
            trace_id=current_trace_id(),
        )
    except SightlineError as exc:
        # An attempt that never reached the gates (not allowed, no such version or report, a
        # concurrent change) is in the audit log too, with why in its outcome.
        target = f"{name}/{version}" if version is not None else name
        await gw.record(who, f"model.{action}", "model", target, outcome=exc.code[:16])
        raise
    body = ModelDecisionOut(
        model=name,
        action=action,
        from_version=decision.from_version,
        to_version=decision.to_version,
        allowed=decision.allowed,
        applied=bool(record["applied"]),
        gates=[GateOut(gate=g.gate, passed=g.passed, reason=g.reason) for g in decision.gates],
        serving_report_sha256=record["serving_report_sha256"],
        candidate_report_sha256=record["candidate_report_sha256"],
        actor=who.subject,
        digest=digest,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.applied else 409)


@router.post(
    "/admin/models/{name}/promote", response_model=ModelDecisionOut, tags=["admin"], responses=RESPONSES
)
async def promote_model(name: ModelName, body: PromotionIn, gw: GW, who: Caller) -> JSONResponse:
    """Serve a candidate version when its evaluation report and shadow disagreement meet every
    gate (admin role); 409 with each gate's reason when one fails. Audited either way."""
    return await _decide(gw, who, PROMOTE, name, body.version)


@router.post(
    "/admin/models/{name}/rollback", response_model=ModelDecisionOut, tags=["admin"], responses=RESPONSES
)
async def rollback_model(name: ModelName, body: RollbackIn, gw: GW, who: Caller) -> JSONResponse:
    """Serve the version that served before the last promotion again (admin role); the gates are
    recorded with both reports' hashes but never hold a rollback back. Audited."""
    return await _decide(gw, who, ROLLBACK, name, body.version)


@router.get(
    "/admin/models/{name}/versions", response_model=ModelVersionsOut, tags=["admin"], responses=ERRORS
)
async def model_versions(name: ModelName, gw: GW, who: Caller) -> ModelVersionsOut:
    """The serving and previous version of a model and its recent promotion decisions (admin role)."""
    _platform_admin(gw, who)
    if name not in gw.settings.models:
        raise NotFound("model not found")
    row = await gw.lifecycle.serving(name)
    manifest_version = gw.lifecycle.manifest_version(name)
    decisions = [
        ModelDecisionOut(
            model=d.model_name,
            action=d.action,
            from_version=d.from_version,
            to_version=d.to_version,
            allowed=bool(d.record.get("allowed")),
            applied=d.applied,
            gates=[GateOut(**g) for g in d.record.get("gates", [])],
            serving_report_sha256=str(d.record.get("serving_report_sha256", "")),
            candidate_report_sha256=str(d.record.get("candidate_report_sha256", "")),
            actor=d.actor,
            digest=d.digest,
        )
        for d in await gw.lifecycle.decisions(name)
    ]
    await gw.record(who, "model.versions", "model", name)
    return ModelVersionsOut(
        model=name,
        manifest_version=manifest_version,
        serving_version=row.serving_version if row is not None else manifest_version,
        previous_version=row.previous_version if row is not None else None,
        decisions=decisions,
    )
