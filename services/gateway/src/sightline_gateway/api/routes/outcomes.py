"""Confirmed outcomes of studies (post-market surveillance): JSON and FHIR intake, history, code table.

Nothing here logs or traces an outcome's code, date or text: the audit event names the outcome
by id only.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict
from sightline_common.errors import Conflict, NotFound
from sightline_common.telemetry import current_trace_id
from sqlalchemy import select

from sightline_gateway.api.deps import GW, Caller, Gateway, StudyId
from sightline_gateway.api.problems import ERRORS, PROBLEM
from sightline_gateway.core.auth import Principal, Role
from sightline_gateway.core.monitoring import OUTCOMES
from sightline_gateway.core.outcomes import (
    OutcomeIn,
    code_rows,
    code_table,
    confirm,
    outcome_from_fhir,
    subgroup_of,
)
from sightline_gateway.core.reports import top_index
from sightline_gateway.db.models import Outcome, Result, Study
from sightline_gateway.db.outcomes import Reporter, outcome_history, record_outcome

router = APIRouter(tags=["outcomes"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"description": "the study has no result yet", **PROBLEM},
}


class OutcomeOut(BaseModel):
    """A stored outcome; ``current`` is false once a later outcome superseded it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    study_id: str
    model_name: str
    model_version: int
    code_system: str
    code: str
    label: str
    positive: bool
    method: str
    diagnosed_on: date
    site: str
    source: str
    reported_by: str
    supersedes: str | None
    created_at: datetime
    current: bool


class CodeTableOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    codes: list[dict[str, str]]


def _out(row: Outcome, current: bool) -> OutcomeOut:
    return OutcomeOut(
        id=row.id,
        study_id=row.study_id,
        model_name=row.model_name,
        model_version=row.model_version,
        code_system=row.code_system,
        code=row.code,
        label=row.label,
        positive=row.positive,
        method=row.method,
        diagnosed_on=row.diagnosed_on,
        site=row.site,
        source=row.source,
        reported_by=row.reported_by,
        supersedes=row.supersedes,
        created_at=row.created_at,
        current=current,
    )


async def _subgroup(gw: Gateway, study: Study, result: Result) -> dict[str, str]:
    if study.purged_at is not None or not study.instance_keys or not result.instances:
        return subgroup_of(None)
    try:
        dicom = await asyncio.to_thread(gw.store.get, study.instance_keys[top_index(result)])
    except (OSError, NotFound):
        dicom = None
    return await asyncio.to_thread(subgroup_of, dicom)


async def _record(gw: Gateway, who: Principal, study_id: str, body: OutcomeIn, source: str) -> OutcomeOut:
    study = await gw.own_study(who, study_id, "outcome.create")
    async with gw.sessions() as session:
        # The outcome is of the study's lesion; it is linked to the first routed model's result
        # (the model whose label set the code table maps to), and performance joins it to every
        # model's result of the study by study id.
        result = await session.scalar(
            select(Result).where(Result.study_id == study.id).order_by(Result.position, Result.model_name)
        )
    if result is None:
        raise Conflict(
            "the study has no result yet: an outcome is linked to the model version that produced it"
        )
    manifest = gw.manifest(result.model_name)
    confirmed = confirm(body, manifest.positive_label if manifest else "malignant", source=source)
    subgroup = await _subgroup(gw, study, result)
    reporter = Reporter(who.subject, sorted(who.roles), who.tenant, current_trace_id())
    row = await record_outcome(gw.audit, study, result, confirmed, reporter, subgroup)
    OUTCOMES.labels(result.model_name, str(result.model_version), row.label).inc()
    return _out(row, current=True)


@router.post("/studies/{study_id}/outcome", status_code=201, response_model=OutcomeOut, responses=RESPONSES)
async def post_outcome(study_id: StudyId, body: OutcomeIn, gw: GW, who: Caller) -> OutcomeOut:
    """A confirmed diagnosis (code from ``GET /v1/outcome-codes``); a later one supersedes it, both kept."""
    who.require(Role.OUTCOME_REPORTER, Role.CLINICIAN)
    return await _record(gw, who, study_id, body, "json")


@router.post(
    "/studies/{study_id}/outcome.fhir", status_code=201, response_model=OutcomeOut, responses=RESPONSES
)
async def post_outcome_fhir(
    study_id: StudyId,
    resource: Annotated[
        dict[str, Any],
        Body(
            media_type="application/fhir+json",
            description="FHIR R4 Observation (valueCodeableConcept, method, effectiveDateTime) or "
            "pathology DiagnosticReport (conclusionCode, category SP/PAT/CP, effectiveDateTime)",
        ),
    ],
    gw: GW,
    who: Caller,
) -> OutcomeOut:
    """The FHIR form of ``POST /outcome``: the same table, roles, supersession and audit."""
    who.require(Role.OUTCOME_REPORTER, Role.CLINICIAN)
    return await _record(gw, who, study_id, outcome_from_fhir(resource), "fhir")


@router.get("/studies/{study_id}/outcomes", response_model=list[OutcomeOut], responses=ERRORS)
async def get_outcomes(study_id: StudyId, gw: GW, who: Caller) -> list[OutcomeOut]:
    """A study's outcomes, the current one first, superseded ones after it."""
    who.require(Role.OUTCOME_REPORTER, Role.CLINICIAN, Role.AUDITOR)
    study = await gw.own_study(who, study_id, "outcome.read")
    rows = await outcome_history(gw.sessions, study.id)
    await gw.record(who, "outcome.read", "study", study.id)
    return [_out(row, current=n == 0) for n, row in enumerate(rows)]


@router.get("/outcome-codes", response_model=CodeTableOut, responses=ERRORS)
async def get_outcome_codes(who: Caller) -> CodeTableOut:
    """The diagnosis codes accepted as outcomes and the model label each maps to."""
    return CodeTableOut(version=code_table().version, codes=code_rows())
