"""DICOMweb: STOW-RS into the same intake as ``POST /v1/studies``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sightline_common.errors import UnsupportedMediaType

from sightline_gateway.api.deps import GW, Caller
from sightline_gateway.api.problems import UPLOAD_ERRORS
from sightline_gateway.api.uploads import read_instances
from sightline_gateway.core import ingest
from sightline_gateway.core.auth import Role

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


@router.post(
    "/studies",
    status_code=202,
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string"}}},
        }
    },
    responses={
        202: {"description": "STOW-RS: stored and queued; RetrieveURL names the study"},
        **UPLOAD_ERRORS,
    },
)
async def stow_rs(request: Request, gw: GW, who: Caller) -> Response:
    """STOW-RS subset (PS3.18 10.5): multipart/related of application/dicom instances, one study.

    The instances take the same path as ``POST /v1/studies`` (de-identification first, never
    stored identified); the response is DICOM JSON with the RetrieveURL (0008,1190).
    """
    who.require(Role.SUBMITTER)
    if ingest.classify(request.headers.get("content-type")) != "multipart-related":
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    instances = await read_instances(request, gw.settings)
    # The study's creation is audited (with the caller's roles) in the transaction that stores it.
    accepted = await gw.pipeline.accept(
        tenant=who.tenant,
        submitted_by=who.subject,
        instances=instances,
        idempotency_key=None,
        explain=True,
        roles=sorted(who.roles),
    )
    del instances
    location = f"/v1/studies/{accepted.study.id}"
    body = {"00081190": {"vr": "UR", "Value": [f"{str(request.base_url).rstrip('/')}{location}"]}}
    return JSONResponse(
        body, status_code=202, headers={"Location": location}, media_type="application/dicom+json"
    )
