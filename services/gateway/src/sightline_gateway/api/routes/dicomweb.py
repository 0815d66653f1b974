"""DICOMweb: STOW-RS into the same intake as ``POST /v1/studies``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sightline_common.errors import InvalidInput, UnprocessableInput, UnsupportedMediaType

from sightline_gateway.api.deps import GW, Caller
from sightline_gateway.api.problems import UPLOAD_ERRORS
from sightline_gateway.api.uploads import read_instances
from sightline_gateway.core import ingest, stow
from sightline_gateway.core.auth import Role
from sightline_gateway.core.routing import (
    REFUSAL_ACTION,
    REFUSAL_OUTCOME,
    REFUSAL_RESOURCE,
    Header,
    Route,
)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


@router.post(
    "/studies",
    status_code=200,
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string"}}},
        }
    },
    responses={
        200: {
            "description": "STOW-RS: all stored and queued; ReferencedSOPSequence, RetrieveURL (the study)"
        },
        202: {"description": "some stored; FailedSOPSequence says which failed and why (FailureReason)"},
        409: {"description": "none stored; FailedSOPSequence with each FailureReason"},
        **UPLOAD_ERRORS,
    },
)
async def stow_rs(request: Request, gw: GW, who: Caller) -> Response:
    """STOW-RS subset (PS3.18 10.5): multipart/related of application/dicom instances, one study.

    The instances take the same path as ``POST /v1/studies`` (de-identification first, never
    stored identified); the response is the PS3.18 10.5.3 DICOM JSON: RetrieveURL (0008,1190),
    ReferencedSOPSequence (0008,1199) and FailedSOPSequence (0008,1198) with FailureReason.
    """
    who.require(Role.SUBMITTER)
    if ingest.classify(request.headers.get("content-type")) != "multipart-related":
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    instances = await read_instances(request, gw.settings)
    router = gw.pipeline.router
    received = await asyncio.to_thread(stow.inspect, instances)
    del instances

    def route(headers: Sequence[Header]) -> Route:
        return router.route(who.tenant, headers)

    # Routed from the headers as received: an instance no enabled model accepts is never stored.
    parts, models = await asyncio.to_thread(stow.assign, received, router.served, route)
    refused = await asyncio.to_thread(stow.refusals, received, parts, router.served, route)
    del received
    if refused is not None:  # who sent what was refused, and which rules refused it (no study values)
        await gw.record(who, REFUSAL_ACTION, REFUSAL_RESOURCE, refused, outcome=REFUSAL_OUTCOME)
    storable = [p.data for p in parts if p.failure is None]
    headers = [p.header for p in parts if p.failure is None and p.header is not None]
    location: str | None = None
    if storable:
        try:
            # The study's creation is audited (with the caller's roles) in the transaction that stores it.
            accepted = await gw.pipeline.accept(
                tenant=who.tenant,
                submitted_by=who.subject,
                instances=storable,
                idempotency_key=None,
                explain=True,
                roles=sorted(who.roles),
                models=models,
                headers=headers if len(headers) == len(storable) else None,
            )
            location = f"/v1/studies/{accepted.study.id}"
        except (InvalidInput, UnprocessableInput):
            parts = stow.all_failed(parts)  # de-identification refused the study: fails closed, whole
    del storable, headers
    retrieve_url = f"{str(request.base_url).rstrip('/')}{location}" if location else None
    status, body = stow.response(parts, retrieve_url)
    return JSONResponse(
        body,
        status_code=status,
        headers={"Location": location} if location else None,
        media_type="application/dicom+json",
    )


# QIDO-RS and WADO-RS of Sightline's results live beside STOW-RS under the same prefix.
from sightline_gateway.api.routes import dicomweb_results  # noqa: E402

router.include_router(dicomweb_results.router)
