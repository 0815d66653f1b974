"""The public REST API under /v1. Routes stay thin: parse, authorise, call the pipeline, audit."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sightline_common.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SightlineError,
    UnsupportedMediaType,
)
from sightline_common.http import read_body
from sightline_common.manifest import ModelManifest
from sightline_common.storage import S3Store, check_key
from sqlalchemy import select, update

from sightline_gateway.api.deps import GW, Caller, Gateway
from sightline_gateway.api.schemas import (
    ApiClientIn,
    ApiClientOut,
    AuditEventOut,
    AuditPage,
    ChainOut,
    ModelDetail,
    ModelSummary,
    ReviewIn,
    ReviewOut,
    StudyOut,
)
from sightline_gateway.core import ingest
from sightline_gateway.core.auth import Principal, Role, new_api_key
from sightline_gateway.core.reports import fhir_bundle, result_body, structured_report
from sightline_gateway.db.models import ApiClient, Result, Review, Study, utcnow

PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, **PROBLEM}
    for code, desc in (
        (400, "malformed request"),
        (401, "not authenticated"),
        (403, "role or signature refused"),
        (404, "not found (or another tenant's)"),
        (422, "well-formed but unprocessable"),
        (429, "rate limited (see Retry-After)"),
        (503, "a dependency is unavailable"),
    )
}
UPLOAD_ERRORS = {
    **ERRORS,
    413: {"description": "upload too large", **PROBLEM},
    415: {"description": "unsupported content type", **PROBLEM},
}

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

StudyId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="study id")]

router = APIRouter(prefix="/v1")


async def _instances(request: Request, gw: Gateway) -> list[bytes]:
    """The upload as identified DICOM instances (photographs wrapped), in memory only."""
    kind = ingest.classify(request.headers.get("content-type"))
    body = await read_body(request, gw.settings.max_upload_bytes)
    if not body:
        raise InvalidInput("empty body")
    instances: list[bytes] = []
    if kind == "dicom":
        instances = [body]
    elif kind == "multipart-related":
        for part_type, data in ingest.split_multipart_related(request.headers["content-type"], body):
            if part_type != ingest.DICOM:
                raise UnsupportedMediaType("multipart/related parts must be application/dicom")
            instances.append(data)
    else:
        request._body = body  # let Starlette's form parser read the already bounded body
        try:
            form = await request.form(max_files=gw.settings.max_instances_per_study + 1, max_fields=4)
        except SightlineError:
            raise
        except Exception as exc:
            raise InvalidInput("malformed multipart/form-data body") from exc
        files = [v for v in form.getlist("file") if not isinstance(v, str)]
        image = form.get("image")
        if files and image is not None:
            raise InvalidInput("send either DICOM 'file' parts or one 'image' part, not both")
        if image is not None:
            if isinstance(image, str):
                raise InvalidInput("'image' must be a file part")
            metadata = form.get("metadata")
            raw = (
                (await metadata.read())
                if metadata is not None and not isinstance(metadata, str)
                else (metadata or "")
            )
            sidecar = ingest.parse_sidecar(raw.encode() if isinstance(raw, str) else raw)
            data = await image.read()
            instances = [
                await asyncio.to_thread(
                    ingest.wrap_photo, data, ingest.media_type(image.content_type), sidecar
                )
            ]
        else:
            for f in files:
                if ingest.media_type(f.content_type) not in (ingest.DICOM, "application/octet-stream"):
                    raise UnsupportedMediaType("'file' parts must be application/dicom")
                instances.append(await f.read())
        await form.close()
    if not instances:
        raise InvalidInput("no instance in the upload")
    if len(instances) > gw.settings.max_instances_per_study:
        raise PayloadTooLarge("too many instances in one study", limit=gw.settings.max_instances_per_study)
    for data in instances:
        if not ingest.looks_like_dicom(data):
            raise InvalidInput("not a DICOM Part 10 file (no DICM prefix)")
    return instances


def _study_out(study: Study) -> StudyOut:
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
    )


async def _own_study(gw: Gateway, who: Principal, study_id: str, action: str) -> Study:
    """The caller's tenant's study, else 404 (another tenant's study is indistinguishable from none)."""
    async with gw.sessions() as session:
        study = await session.get(Study, study_id)
    if study is None or study.tenant_id != who.tenant:
        await gw.record(who, action, "study", study_id, outcome="not-found")
        raise NotFound("study not found")
    return study


async def _result(gw: Gateway, study: Study) -> tuple[Result, list[Review]]:
    async with gw.sessions() as session:
        result = await session.scalar(select(Result).where(Result.study_id == study.id))
        reviews = (
            await session.scalars(
                select(Review).where(Review.study_id == study.id).order_by(Review.created_at)
            )
        ).all()
    if result is None:
        if study.status == "failed":
            raise NotFound("study failed; it has no result", error_code=study.error_code or "")
        raise NotFound("result not ready", status_url=f"/v1/studies/{study.id}")
    return result, list(reviews)


def _manifest(gw: Gateway, name: str) -> ModelManifest | None:
    try:
        return gw.pipeline.manifests.get(name)
    except (NotFound, OSError, ValueError):
        return None


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
    existing = await gw.pipeline.find_idempotent(who.tenant, idempotency_key)
    if existing is not None:
        accepted_study, created = existing, False
    else:
        instances = await _instances(request, gw)
        accepted = await gw.pipeline.accept(
            tenant=who.tenant,
            submitted_by=who.subject,
            instances=instances,
            idempotency_key=idempotency_key,
            explain=explain,
            roles=sorted(who.roles),
            watch=mode == "sync",
        )
        del instances
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
            return await _result_response(request, gw, who, study, headers={"Location": location})
        if study.status == "failed":
            raise _failure(study)
    return JSONResponse(
        _study_out(study).model_dump(mode="json"),
        status_code=202,
        headers={"Location": location},
    )


def _failure(study: Study) -> SightlineError:
    from sightline_common import errors

    by_code = {
        c.code: c
        for c in (
            errors.InvalidInput,
            errors.UnprocessableInput,
            errors.PayloadTooLarge,
            errors.UnsupportedMediaType,
            errors.DependencyUnavailable,
        )
    }
    cls = by_code.get(study.error_code or "", errors.DependencyUnavailable)
    return cls(study.error_detail or "study failed", study_id=study.id)


@router.get("/studies/{study_id}", response_model=StudyOut, tags=["studies"], responses=ERRORS)
async def get_study(study_id: StudyId, gw: GW, who: Caller) -> StudyOut:
    """Status and stage timings of one of your tenant's studies."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await _own_study(gw, who, study_id, "study.read")
    await gw.record(who, "study.read", "study", study.id)
    return _study_out(study)


async def _result_response(
    request: Request, gw: Gateway, who: Principal, study: Study, headers: dict[str, str] | None = None
) -> JSONResponse:
    result, reviews = await _result(gw, study)
    await gw.record(who, "result.read", "result", study.id)
    body = result_body(
        study_id=study.id,
        result=result,
        manifest=_manifest(gw, result.model_name),
        links=_links(gw, request, result, study.purged_at is not None),
        reviews=reviews,
    )
    return JSONResponse(body, headers=headers)


@router.get("/studies/{study_id}/result", tags=["results"], responses=ERRORS)
async def get_result(study_id: StudyId, request: Request, gw: GW, who: Caller) -> JSONResponse:
    """The model's result: probability, threshold, decision, explanation links; preliminary until reviewed."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await _own_study(gw, who, study_id, "result.read")
    return await _result_response(request, gw, who, study)


@router.get(
    "/studies/{study_id}/result.fhir",
    tags=["results"],
    responses=ERRORS,
    response_class=JSONResponse,
)
async def get_result_fhir(study_id: StudyId, request: Request, gw: GW, who: Caller) -> JSONResponse:
    """FHIR R4 Bundle: DiagnosticReport, Observation (probability) and Device (the model)."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await _own_study(gw, who, study_id, "result.read.fhir")
    result, _ = await _result(gw, study)
    bundle = fhir_bundle(study_id=study.id, result=result, base_url=str(request.base_url).rstrip("/"))
    await gw.record(who, "result.read.fhir", "result", study.id)
    return JSONResponse(bundle, media_type="application/fhir+json")


@router.get(
    "/studies/{study_id}/result.dcm",
    tags=["results"],
    response_class=Response,
    responses={200: {"content": {"application/dicom": {}}}, **ERRORS},
)
async def get_result_sr(study_id: StudyId, gw: GW, who: Caller) -> Response:
    """DICOM SR (TID 1500 measurement report) referencing the de-identified image."""
    who.require(Role.SUBMITTER, Role.CLINICIAN)
    study = await _own_study(gw, who, study_id, "result.read.sr")
    result, _ = await _result(gw, study)
    if study.purged_at is not None or not study.instance_keys:
        raise NotFound("the de-identified image was deleted under the retention policy")
    top = max(range(len(result.instances)), key=lambda n: result.instances[n]["probability"])
    source = await asyncio.to_thread(gw.store.get, study.instance_keys[top])
    data = await asyncio.to_thread(structured_report, result=result, source=source)
    await gw.record(who, "result.read.sr", "result", study.id)
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
    who.require(Role.CLINICIAN)
    study = await _own_study(gw, who, study_id, "review.create")
    import uuid

    now = utcnow()
    async with gw.sessions() as session, session.begin():
        result = await session.scalar(select(Result).where(Result.study_id == study.id))
        if result is None:
            raise NotFound("no result to review yet")
        row = Review(
            id=str(uuid.uuid4()),
            study_id=study.id,
            tenant_id=study.tenant_id,
            reviewer=who.subject,
            verdict=review.verdict,
            comment=review.comment,
            created_at=now,
        )
        session.add(row)
        await session.execute(
            update(Result)
            .where(Result.id == result.id, Result.status == "preliminary")
            .values(status="final", finalised_at=now)
        )
    await gw.record(who, "review.create", "review", row.id)
    return ReviewOut(
        id=row.id,
        study_id=study.id,
        verdict=row.verdict,
        reviewer=row.reviewer,
        created_at=now,
        result_status="final",
    )


@router.get("/models", response_model=list[ModelSummary], tags=["models"], responses=ERRORS)
async def list_models(gw: GW, who: Caller) -> list[ModelSummary]:
    """The models in the repository (name, version, whether a placeholder)."""
    repo = gw.settings.model_repository
    out = []
    for path in sorted(repo.glob("*/manifest.json")) if repo.is_dir() else []:
        m = _manifest(gw, path.parent.name)
        if m is not None:
            out.append(
                ModelSummary(
                    name=m.name,
                    version=m.version,
                    placeholder=m.placeholder,
                    labels=m.labels,
                    threshold=m.threshold,
                    intended_use=m.intended_use,
                )
            )
    await gw.record(who, "model.list", "model", None)
    return out


@router.get("/models/{name}", response_model=ModelDetail, tags=["models"], responses=ERRORS)
async def get_model(
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")], gw: GW, who: Caller
) -> ModelDetail:
    """A model's manifest and model card."""
    m = _manifest(gw, name)
    if m is None:
        raise NotFound("model not found")
    card = gw.settings.model_repository / name / "MODEL_CARD.md"
    await gw.record(who, "model.read", "model", name)
    return ModelDetail(
        manifest=m.model_dump(mode="json"), model_card=card.read_text() if card.is_file() else None
    )


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


@router.post("/api-clients", status_code=201, response_model=ApiClientOut, tags=["admin"], responses=ERRORS)
async def create_api_client(body: ApiClientIn, gw: GW, who: Caller) -> ApiClientOut:
    """Create an API key for a machine client of your tenant (admin role); the key is shown once."""
    who.require(Role.ADMIN)
    client_id, key, digest = new_api_key()
    roles = sorted({r.value for r in body.roles})
    async with gw.sessions() as session, session.begin():
        session.add(
            ApiClient(id=client_id, tenant_id=who.tenant, name=body.name, key_hash=digest, roles=roles)
        )
    await gw.record(who, "api-client.create", "api-client", client_id)
    return ApiClientOut(client_id=client_id, tenant=who.tenant, roles=roles, api_key=key)


@router.get(
    "/objects/{key:path}",
    tags=["results"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}, **ERRORS},
)
async def get_object(
    key: str,
    gw: GW,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """A stored explanation artifact through a time-limited signed link (no other credential)."""
    check_key(key)
    if not key.startswith("studies/") or "/explain/" not in key:
        raise NotFound("object not found")
    gw.signer.check(key, expires, signature)
    data = await asyncio.to_thread(gw.store.get, key)
    media = "image/png" if key.endswith(".png") else "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=60"})


dicomweb = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


@dicomweb.post(
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
    instances = await _instances(request, gw)
    accepted = await gw.pipeline.accept(
        tenant=who.tenant, submitted_by=who.subject, instances=instances, idempotency_key=None, explain=True
    )
    del instances
    await gw.record(who, "study.create", "study", accepted.study.id)
    location = f"/v1/studies/{accepted.study.id}"
    body = {"00081190": {"vr": "UR", "Value": [f"{str(request.base_url).rstrip('/')}{location}"]}}
    return JSONResponse(
        body, status_code=202, headers={"Location": location}, media_type="application/dicom+json"
    )
