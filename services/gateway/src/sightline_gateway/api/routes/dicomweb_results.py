"""QIDO-RS (search) and WADO-RS (retrieve) of Sightline's results, per tenant (PS3.18 10.6, 10.4).

What a tenant can find and fetch is the result SR of each of its completed studies, under the
de-identified StudyInstanceUID; never the images it sent.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydicom import dcmread
from sightline_common.errors import NotFound
from sqlalchemy import select

from sightline_gateway.api.deps import GW, Caller, Gateway
from sightline_gateway.api.problems import ERRORS
from sightline_gateway.api.routes.results import load_results, top_images
from sightline_gateway.core import dicomweb
from sightline_gateway.core.auth import Principal, Role
from sightline_gateway.core.sr import structured_report
from sightline_gateway.db.models import Study

router = APIRouter(tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
Uid = Annotated[str, Path(pattern=r"^[0-9.]{1,64}$", description="a DICOM UID")]
WADO: dict[int | str, dict[str, Any]] = {
    200: {"content": {'multipart/related; type="application/dicom"': {}}},
    **ERRORS,
}
QIDO: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {}}},
    204: {"description": "no match"},
    **ERRORS,
}


def _base(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/dicomweb"


async def _studies(
    gw: Gateway, who: Principal, study_uid: str | None, limit: int, offset: int
) -> list[Study]:
    """The tenant's studies that have a result SR to offer (completed, image not yet purged)."""
    query = (
        select(Study)
        .where(
            Study.tenant_id == who.tenant,
            Study.status == "completed",
            Study.deid_study_uid.is_not(None),
            Study.purged_at.is_(None),
        )
        .order_by(Study.created_at, Study.id)
        .limit(limit)
        .offset(offset)
    )
    if study_uid is not None:
        query = query.where(Study.deid_study_uid == study_uid)
    async with gw.sessions() as session:
        return list((await session.scalars(query)).all())


async def _one(
    gw: Gateway,
    who: Principal,
    study_uid: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> tuple[Study, dicomweb.ResultObject]:
    found = await _studies(gw, who, study_uid, 1, 0)
    if found:
        study = found[0]
        obj = dicomweb.result_object(study.id, study_uid)
        if series_uid in (None, obj.series_uid) and instance_uid in (None, obj.sop_instance_uid):
            return study, obj
    await gw.record(who, "result.read.wado", "study", None, outcome="not-found")
    raise NotFound("no such result object")


async def _sr(gw: Gateway, study: Study, obj: dicomweb.ResultObject) -> bytes:
    results, _ = await load_results(gw, study)
    sources = await top_images(gw, study, results)
    return await asyncio.to_thread(
        structured_report,
        results=results,
        sources=sources,
        series_uid=obj.series_uid,
        sop_instance_uid=obj.sop_instance_uid,
    )


def _matches(items: list[dict[str, Any]]) -> Response:
    if not items:
        return Response(status_code=204)
    return JSONResponse(items, media_type=DICOM_JSON)


@router.get("/studies", response_class=Response, responses=QIDO)
async def search_studies(
    request: Request,
    gw: GW,
    who: Caller,
    study_uid: Annotated[str | None, Query(alias="StudyInstanceUID", pattern=r"^[0-9.]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """QIDO-RS: the tenant's studies with a Sightline result (StudyInstanceUID, limit, offset)."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    studies = await _studies(gw, who, study_uid, limit, offset)
    await gw.record(who, "result.search.qido", "study", None)
    base = _base(request)
    return _matches(
        [dicomweb.study_json(dicomweb.result_object(s.id, s.deid_study_uid or ""), base) for s in studies]
    )


@router.get("/studies/{study_uid}/series", response_class=Response, responses=QIDO)
async def search_series(study_uid: Uid, request: Request, gw: GW, who: Caller) -> Response:
    """QIDO-RS: the result series of a study."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    found = await _studies(gw, who, study_uid, 1, 0)
    await gw.record(who, "result.search.qido", "study", found[0].id if found else None)
    return _matches(
        [dicomweb.series_json(dicomweb.result_object(s.id, study_uid), _base(request)) for s in found]
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances", response_class=Response, responses=QIDO)
async def search_instances(
    study_uid: Uid, series_uid: Uid, request: Request, gw: GW, who: Caller
) -> Response:
    """QIDO-RS: the result instance of a series."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    found = await _studies(gw, who, study_uid, 1, 0)
    objects = [dicomweb.result_object(s.id, study_uid) for s in found]
    await gw.record(who, "result.search.qido", "study", found[0].id if found else None)
    base = _base(request)
    return _matches([dicomweb.instance_json(o, base) for o in objects if o.series_uid == series_uid])


@router.get("/studies/{study_uid}", response_class=Response, responses=WADO)
async def retrieve_study(study_uid: Uid, gw: GW, who: Caller) -> Response:
    """WADO-RS: every result instance of the study (multipart/related of application/dicom)."""
    return await _retrieve(gw, who, study_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}",
    response_class=Response,
    responses=WADO,
)
async def retrieve_instance(
    study_uid: Uid, series_uid: Uid, instance_uid: Uid, gw: GW, who: Caller
) -> Response:
    """WADO-RS: one result instance (multipart/related of application/dicom)."""
    return await _retrieve(gw, who, study_uid, series_uid, instance_uid)


@router.get("/studies/{study_uid}/metadata", response_class=Response, responses=QIDO)
async def retrieve_metadata(study_uid: Uid, gw: GW, who: Caller) -> Response:
    """WADO-RS metadata: the result instances of the study as DICOM JSON."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study, obj = await _one(gw, who, study_uid)
    data = await _sr(gw, study, obj)
    await gw.record(who, "result.read.wado", "result", study.id)
    return JSONResponse([dcmread(io.BytesIO(data)).to_json_dict()], media_type=DICOM_JSON)


async def _retrieve(
    gw: Gateway,
    who: Principal,
    study_uid: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> Response:
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study, obj = await _one(gw, who, study_uid, series_uid, instance_uid)
    data = await _sr(gw, study, obj)
    await gw.record(who, "result.read.wado", "result", study.id)
    body, content_type = dicomweb.multipart_related([data])
    return Response(body, media_type=content_type)
