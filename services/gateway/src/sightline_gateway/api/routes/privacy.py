"""Privacy reports of your tenant: re-identification risk of the de-identified studies (auditor role)."""

from __future__ import annotations

from fastapi import APIRouter

from sightline_gateway.api.deps import GW, Caller
from sightline_gateway.api.problems import ERRORS
from sightline_gateway.api.schemas import KCount, RiskReportOut
from sightline_gateway.core.auth import Role

router = APIRouter()

QUASI_IDENTIFIERS = [
    "age",
    "sex",
    "device (manufacturer, model, station, serial)",
    "body part",
    "shifted year",
]


@router.get(
    "/privacy/reidentification-risk", response_model=RiskReportOut, tags=["privacy"], responses=ERRORS
)
async def reidentification_risk(gw: GW, who: Caller) -> RiskReportOut:
    """k-anonymity of the quasi-identifiers your de-identified studies keep: the distribution of k
    and the share of studies below the threshold (auditor role; the read is audited)."""
    who.require(Role.AUDITOR)
    report = await gw.pipeline.risk.report(who.tenant)
    await gw.record(who, "privacy.risk-report", "tenant", who.tenant)
    return RiskReportOut(
        tenant=report.tenant,
        k_threshold=report.threshold,
        studies=report.studies,
        generalised=report.generalised,
        below_k=report.below_k,
        share_below_k=round(report.share_below_k, 6),
        distribution=[KCount(k=k, studies=n) for k, n in report.distribution],
        quasi_identifiers=QUASI_IDENTIFIERS,
    )
