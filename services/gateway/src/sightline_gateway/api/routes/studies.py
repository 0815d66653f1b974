"""Submitting a study and following its status."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from sightline_common.errors import DependencyUnavailable, SightlineError, error_class
from sightline_common.http import INPUT_CODES

from sightline_gateway.api.deps import GW, Caller, StudyId
from sightline_gateway.api.problems import ERRORS, UPLOAD_ERRORS
from sightline_gateway.api.routes.results import result_response
from sightline_gateway.api.schemas import StudyOut
from sightline_gateway.api.uploads import read_upload
from sightline_gateway.core.auth import Role
from sightline_gateway.db.models import Study

STUDY_BODY = {
    "required": True,
    "content": {
        "application/dicom": {"schema": {"type": "string", "format": "binary"}},
        "multipart/related": {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": 'several instances: multipart/related; type="application/dicom"',
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "DICOM instances (application/dicom)",
                    },
                    "image": {
                        "type": "string",
                        "format": "binary",
                        "description": "a JPEG or PNG photograph",
                    },
                    "metadata": {
                        "type": "string",
                        "description": "JSON sidecar: sex (M/F/O), age, body_site, device",
                    },
                },
            }
        },
    },
}

router = APIRouter()


def study_out(study: Study) -> StudyOut:
    return StudyOut(
        id=study.id,
        status=study.status,  # type: ignore[arg-type]
        created_at=study.created_at,
        updated_at=study.updated_at,
        instances=len(study.instance_keys),
        explain=study.explain,
        stage_timings_ms=dict(study.stage_timings or {}),
        deid=dict(study.deid_summary or {}),
        error={"code": study.error_code, "detail": study.error_detail or ""} if study.error_code else None,
        result_url=f"/v1/studies/{study.id}/result" if study.status == "completed" else None,
        trace_id=study.trace_id,
        images_purged=study.purged_at is not None,
        models=[str(m) for m in study.models or []],
    )


def _failure(study: Study) -> SightlineError:
    """A failed study's error for a sync caller: an input error keeps its code, else 503."""
    code = study.error_code or ""
    cls = (error_class(code) if code in INPUT_CODES else None) or DependencyUnavailable
    return cls(study.error_detail or "study failed", study_id=study.id)


@router.post(
    "/studies",
    status_code=202,
    response_model=None,
    tags=["studies"],
    openapi_extra={"requestBody": STUDY_BODY},
    responses={
        200: {"description": "mode=sync: the result"},
        202: {"description": "accepted; poll Location"},
        **UPLOAD_ERRORS,
    },
)
async def submit_study(
    request: Request,
    gw: GW,
    who: Caller,
    mode: Annotated[
        Literal["async", "sync"], Query(description="sync waits (bounded) for the result")
    ] = "async",
    explain: Annotated[bool, Query(description="compute a Grad-CAM explanation")] = True,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> Response:
    """Submit a study; identified bytes go only to de-identification, never to storage or logs."""
    who.require(Role.SUBMITTER)
    upload = await read_upload(request, gw.settings)
    accepted = await gw.pipeline.accept(
        tenant=who.tenant,
        submitted_by=who.subject,
        instances=upload.instances,
        idempotency_key=idempotency_key,
        explain=explain,
        roles=sorted(who.roles),
        watch=mode == "sync",
        fingerprint=upload.request_fingerprint(explain=explain),
    )
    del upload
    accepted_study, created = accepted.study, accepted.created
    if not created:  # a new study's creation is audited in the transaction that stores it
        await gw.record(who, "study.create.idempotent-replay", "study", accepted_study.id)
    location = f"/v1/studies/{accepted_study.id}"
    study = accepted_study
    if mode == "sync":
        study = await gw.pipeline.wait(
            accepted_study.id, gw.settings.sync_timeout_s, accepted_study if created else None
        )
        if study.status == "completed":
            return await result_response(request, gw, who, study, headers={"Location": location})
        if study.status == "failed":
            raise _failure(study)
    return JSONResponse(
        study_out(study).model_dump(mode="json"),
        status_code=202,
        headers={"Location": location},
    )


@router.get("/studies/{study_id}", response_model=StudyOut, tags=["studies"], responses=ERRORS)
async def get_study(study_id: StudyId, gw: GW, who: Caller) -> StudyOut:
    """Status and stage timings of one of your tenant's studies."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await gw.own_study(who, study_id, "study.read")
    await gw.record(who, "study.read", "study", study.id)
    return study_out(study)
