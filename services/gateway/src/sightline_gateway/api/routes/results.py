"""A study's result (JSON, FHIR R4, DICOM SR, heatmap SEG) and clinicians' reviews of it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sightline_common.errors import Conflict, NotFound, UnprocessableInput
from sightline_common.storage import S3Store
from sightline_common.telemetry import current_trace_id
from sqlalchemy import select, update

from sightline_gateway.api.deps import GW, Caller, Gateway, StudyId
from sightline_gateway.api.problems import ERRORS, PROBLEM
from sightline_gateway.api.schemas import ReviewIn, ReviewOut
from sightline_gateway.core import dicomweb
from sightline_gateway.core.auth import Principal, Role
from sightline_gateway.core.heatmap_dicom import heatmap_segmentation
from sightline_gateway.core.reports import (
    fhir_bundle,
    imaging_study,
    result_body,
    top_index,
)
from sightline_gateway.core.review import REVIEW_VERDICTS
from sightline_gateway.core.sr import structured_report
from sightline_gateway.db.deliveries import delivery_body
from sightline_gateway.db.models import Result, Review, Study, utcnow

router = APIRouter()


async def load_results(gw: Gateway, study: Study) -> tuple[list[Result], list[Review]]:
    """A study's results (one per model, in routing order) and its reviews (oldest first), else
    404 saying why there are none."""
    async with gw.sessions() as session:
        results = (
            await session.scalars(
                select(Result).where(Result.study_id == study.id).order_by(Result.position, Result.model_name)
            )
        ).all()
        reviews = (
            await session.scalars(
                select(Review).where(Review.study_id == study.id).order_by(Review.created_at)
            )
        ).all()
    if not results:
        if study.status == "failed":
            raise NotFound("study failed; it has no result", error_code=study.error_code or "")
        raise NotFound("result not ready", status_url=f"/v1/studies/{study.id}")
    return list(results), list(reviews)


async def load_result(gw: Gateway, study: Study) -> tuple[Result, list[Review]]:
    """A study's first model's result (the one its single-model forms describe) and its reviews."""
    results, reviews = await load_results(gw, study)
    return results[0], reviews


async def top_images(gw: Gateway, study: Study, results: Sequence[Result]) -> list[bytes]:
    """Each result's top-scoring de-identified image (404 once retention deleted them)."""
    if study.purged_at is not None or not study.instance_keys:
        raise NotFound("the de-identified image was deleted under the retention policy")
    keys = [study.instance_keys[top_index(r)] for r in results]
    cache = {key: await asyncio.to_thread(gw.store.get, key) for key in dict.fromkeys(keys)}
    return [cache[key] for key in keys]


def _links(gw: Gateway, request: Request, result: Result, purged: bool) -> dict[str, str]:
    """Time-limited links to the overlay and heatmap: presigned on S3, gateway-signed locally."""
    exp = result.explanation or {}
    if purged or exp.get("status") != "available":
        return {}
    ttl = gw.settings.signed_url_ttl_s
    links = {}
    for name, key in (("overlay_png", exp.get("overlay_key")), ("heatmap_npy", exp.get("heatmap_key"))):
        if not key:
            continue
        if isinstance(gw.store, S3Store):
            links[name] = gw.store.presigned_get(key, timedelta(seconds=ttl))
        else:
            expires = int(time.time()) + ttl
            base = str(request.base_url).rstrip("/")
            links[name] = (
                f"{base}/v1/objects/{key}?expires={expires}&signature={gw.signer.signature(key, expires)}"
            )
    links["expires_in_s"] = str(ttl)
    return links


async def result_response(
    request: Request, gw: Gateway, who: Principal, study: Study, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The result body of ``study`` (audited as read by ``who``)."""
    results, reviews = await load_results(gw, study)
    await gw.record(who, "result.read", "result", study.id)
    purged = study.purged_at is not None
    body = result_body(
        study_id=study.id,
        results=results,
        manifests=[gw.manifest(r.model_name) for r in results],
        links=[_links(gw, request, r, purged) for r in results],
        reviews=reviews,
    )
    delivery = await gw.pipeline.deliveries.status_of(study.id)
    if delivery is not None:  # the tenant has a PACS: where its result stands on the way back
        body["delivery"] = delivery_body(delivery)
    return JSONResponse(body, headers=headers)


@router.get("/studies/{study_id}/result", tags=["results"], responses=ERRORS)
async def get_result(study_id: StudyId, request: Request, gw: GW, who: Caller) -> JSONResponse:
    """The models' result: probability, threshold, decision, explanation links; preliminary until reviewed.

    ``findings`` holds one entry per model the study was routed to (in routing order): the
    model (name, version, sha256), probability, threshold, decision, explanation and its links,
    the out-of-scope flag for a model with one, and ``model_card`` (the model's page). The
    top-level fields are the first model's, as for a study that went to one model.

    For a tenant with a PACS, ``delivery`` says where the result stands on its way back there
    (re-identified under the patient's own study): ``status`` pending, delivered or failed,
    ``attempts``, ``destination`` (the configured name), ``delivered_at`` and ``last_error``.
    """
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await gw.own_study(who, study_id, "result.read")
    return await result_response(request, gw, who, study)


@router.post(
    "/studies/{study_id}/delivery",
    status_code=202,
    tags=["results"],
    responses={
        409: {**PROBLEM, "description": "the delivery is not failed (pending or delivered)"},
        **ERRORS,
    },
)
async def redeliver(study_id: StudyId, gw: GW, who: Caller) -> JSONResponse:
    """Send a result whose delivery to the tenant's PACS failed again (admin): pending from now, with a
    fresh retry budget; the sealed record was kept, so nothing is lost while the PACS was away."""
    who.require(Role.ADMIN)
    study = await gw.own_study(who, study_id, "result.redeliver")
    if await gw.pipeline.deliveries.status_of(study.id) is None:
        raise NotFound("this study's result has no delivery (its tenant has no PACS, or no result yet)")
    if not await gw.pipeline.deliveries.requeue(study.id, who.subject, sorted(who.roles), current_trace_id()):
        raise Conflict("only a failed delivery is sent again; this one is pending or delivered")
    delivery = await gw.pipeline.deliveries.status_of(study.id)
    assert delivery is not None
    return JSONResponse({"delivery": delivery_body(delivery)}, status_code=202)


@router.get(
    "/studies/{study_id}/result.fhir",
    tags=["results"],
    responses=ERRORS,
    response_class=JSONResponse,
)
async def get_result_fhir(study_id: StudyId, request: Request, gw: GW, who: Caller) -> JSONResponse:
    """FHIR R4 Bundle: DiagnosticReport, and an Observation (probability) and Device per model.

    When the caller is the tenant's own system (the submitter role) and the tenant files results
    in its PACS, the report names the original accession number (``basedOn``) from the study's
    re-identification record; a clinician reading through Sightline never gets it.
    """
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await gw.own_study(who, study_id, "result.read.fhir")
    results, _ = await load_results(gw, study)
    imaging = None
    if study.deid_study_uid:
        obj = dicomweb.result_object(study.id, study.deid_study_uid)
        imaging = imaging_study(study.id, obj.study_uid, obj.series_uid, obj.sop_instance_uid)
    accession = None
    forwarder = gw.pipeline.forwarder
    if Role.SUBMITTER in who.roles and forwarder is not None:
        accession = await forwarder.accession(study.id)
    bundle = fhir_bundle(
        study_id=study.id,
        results=results,
        base_url=str(request.base_url).rstrip("/"),
        study=imaging,
        accession=accession,
    )
    await gw.record(who, "result.read.fhir", "result", study.id)
    return JSONResponse(bundle, media_type="application/fhir+json")


@router.get(
    "/studies/{study_id}/result.dcm",
    tags=["results"],
    response_class=Response,
    responses={200: {"content": {"application/dicom": {}}}, **ERRORS},
)
async def get_result_sr(study_id: StudyId, gw: GW, who: Caller) -> Response:
    """DICOM SR (TID 1500 measurement report), one finding per model, referencing the de-identified images."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await gw.own_study(who, study_id, "result.read.sr")
    results, _ = await load_results(gw, study)
    sources = await top_images(gw, study, results)
    # The same series/instance UIDs as DICOMweb's WADO-RS (stable per study, not random per call).
    obj = dicomweb.result_object(study.id, study.deid_study_uid or "")
    data = await asyncio.to_thread(
        structured_report,
        results=results,
        sources=sources,
        series_uid=obj.series_uid,
        sop_instance_uid=obj.sop_instance_uid,
    )
    await gw.record(who, "result.read.sr", "result", study.id)
    return Response(data, media_type="application/dicom")


@router.get(
    "/studies/{study_id}/heatmap.dcm",
    tags=["results"],
    response_class=Response,
    responses={200: {"content": {"application/dicom": {}}}, **ERRORS},
)
async def get_heatmap_seg(study_id: StudyId, gw: GW, who: Caller) -> Response:
    """The Grad-CAM heatmap as a DICOM Segmentation (FRACTIONAL) of the de-identified image, AI-marked.

    For a study routed to several models, the first model's heatmap (the others' are linked from
    their ``findings`` in the JSON result).
    """
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await gw.own_study(who, study_id, "result.read.heatmap")
    result, _ = await load_result(gw, study)
    explanation = result.explanation or {}
    if study.purged_at is not None or not study.instance_keys or explanation.get("status") != "available":
        raise NotFound("no heatmap for this study (not explained, or deleted under the retention policy)")
    source = await asyncio.to_thread(gw.store.get, study.instance_keys[top_index(result)])
    heatmap = await asyncio.to_thread(gw.store.get, explanation["heatmap_key"])
    series_uid, instance_uid = dicomweb.heatmap_uids(study.id)
    data = await asyncio.to_thread(
        heatmap_segmentation,
        result=result,
        source=source,
        heatmap_npy=heatmap,
        series_uid=series_uid,
        sop_instance_uid=instance_uid,
    )
    await gw.record(who, "result.read.heatmap", "result", study.id)
    return Response(data, media_type="application/dicom")


@router.post(
    "/studies/{study_id}/reviews",
    status_code=201,
    response_model=ReviewOut,
    tags=["results"],
    responses=ERRORS,
)
async def post_review(study_id: StudyId, review: ReviewIn, gw: GW, who: Caller) -> ReviewOut:
    """A clinician's agree / disagree / uncertain; the first review makes the result final."""
    return await record_review(gw, who, study_id, review)


async def record_review(gw: Gateway, who: Principal, study_id: str, review: ReviewIn) -> ReviewOut:
    """Store a clinician's review, finalise the result, audit it: the API's and the review UI's path."""
    who.require(Role.CLINICIAN)
    study = await gw.own_study(who, study_id, "review.create")
    now = utcnow()
    async with gw.sessions() as session, session.begin():
        results = (await session.scalars(select(Result).where(Result.study_id == study.id))).all()
        if not results:
            raise NotFound("no result to review yet")
        # A review is of the study: it covers every model's finding and finalises them together.
        labels = [label for r in results for m in [gw.manifest(r.model_name)] if m for label in m.labels]
        if review.corrected_label is not None and labels and review.corrected_label not in labels:
            raise UnprocessableInput(f"corrected_label must be one of: {', '.join(dict.fromkeys(labels))}")
        row = Review(
            id=str(uuid.uuid4()),
            study_id=study.id,
            tenant_id=study.tenant_id,
            reviewer=who.subject,
            verdict=review.verdict,
            comment=review.comment,
            corrected_label=review.corrected_label,
            created_at=now,
        )
        session.add(row)
        await session.execute(
            update(Result)
            .where(Result.study_id == study.id, Result.status == "preliminary")
            .values(status="final", finalised_at=now)
        )
    await gw.record(who, "review.create", "review", row.id)
    for result in results:
        REVIEW_VERDICTS.labels(result.model_name, str(result.model_version), row.verdict).inc()
    return ReviewOut(
        id=row.id,
        study_id=study.id,
        verdict=row.verdict,
        corrected_label=row.corrected_label,
        reviewer=row.reviewer,
        created_at=now,
        result_status="final",
    )
