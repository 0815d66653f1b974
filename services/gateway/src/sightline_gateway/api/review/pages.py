"""The worklist, the study view and the verdict form; the two image layers of the study view.

Every figure shown comes from the same stored result, manifest and evaluation the API reads;
the verdict goes through :func:`record_review`, the API's own review path.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, cast

import pydicom
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sightline_common.errors import NotFound, SightlineError, UnprocessableInput

from sightline_gateway.api.deps import GW, Gateway, StudyId
from sightline_gateway.api.review.session import Clinician, ReviewPageError, check_csrf, render, secured
from sightline_gateway.api.routes.results import load_result, load_results, record_review
from sightline_gateway.api.schemas import ReviewIn
from sightline_gateway.core.reports import (
    ASSISTIVE_STATEMENT,
    NO_REFER,
    OUT_OF_SCOPE_NOTE,
    PLACEHOLDER_NOTE,
    REFER,
    out_of_scope_summary,
    top_index,
)
from sightline_gateway.core.review import (
    age_band,
    agreement,
    calibration_sentence,
    parse_dicom_age,
    subgroup_performance,
    unlike_training,
)
from sightline_gateway.core.review_images import heatmap_png, model_view_png
from sightline_gateway.db.models import Study, utcnow
from sightline_gateway.db.worklist import STATES, State, WorklistQuery, worklist

log = logging.getLogger(__name__)
router = APIRouter()
DECISIONS = ("referred", "not-referred")
#: The worklist's age filter: name -> (label, age, newer than it (else older)).
AGES: dict[str, tuple[str, timedelta, bool]] = {
    "1d": ("received in the last 24 hours", timedelta(days=1), True),
    "7d": ("received in the last 7 days", timedelta(days=7), True),
    "over-1d": ("received over 24 hours ago", timedelta(days=1), False),
    "over-7d": ("received over 7 days ago", timedelta(days=7), False),
}


@functools.lru_cache(maxsize=8)
def _evaluation(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


@router.get("/", name="review_worklist")
async def worklist_page(
    request: Request,
    gw: GW,
    me: Clinician,
    state: Annotated[str, Query(max_length=16)] = "",
    decision: Annotated[str, Query(max_length=16)] = "",
    version: Annotated[str, Query(max_length=6)] = "",
    age: Annotated[str, Query(max_length=8)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """The tenant's studies, referred and oldest first, with counts per state (empty filter: any)."""
    who, session = me
    valid_version = version == "" or version.isdigit()
    if state not in ("", *STATES) or decision not in ("", *DECISIONS) or not valid_version:
        raise ReviewPageError(400, "Unknown filter value.")
    if age not in ("", *AGES):
        raise ReviewPageError(400, "Unknown filter value.")
    cutoff = utcnow() - AGES[age][1] if age else None
    newer = bool(age) and AGES[age][2]
    query = WorklistQuery(
        state=cast(State, state) if state else None,
        referred=None if not decision else decision == "referred",
        model_version=int(version) if version else None,
        received_after=cutoff if newer else None,
        received_before=cutoff if not newer else None,
        page=page,
    )
    listing = await worklist(gw.sessions, who.tenant, query)
    await gw.record(who, "review.worklist.read", "study", None)
    filters = {"state": state, "decision": decision, "version": int(version) if version else "", "age": age}
    context = {"title": "Worklist", "who": who, "csrf": session.csrf, "list": listing, "filters": filters}
    return render(request, "worklist.html", context | {"ages": {k: v[0] for k, v in AGES.items()}})


async def _study(gw: Gateway, me: Clinician, study_id: str, action: str) -> Study:
    try:
        return await gw.own_study(me[0], study_id, action)
    except NotFound as exc:
        raise ReviewPageError(404, "No such study in your worklist.") from exc


def _subgroup(dicom: bytes | None) -> dict[str, str]:
    if dicom is None:
        return {"sex": "unknown", "age_band": "unknown"}
    ds = pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True)
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return {
        "sex": sex if sex in ("F", "M") else "unknown",
        "age_band": age_band(parse_dicom_age(str(ds.get("PatientAge", "") or ""))),
    }


async def _top_instance(gw: Gateway, study: Study, result: Any) -> bytes | None:
    if study.purged_at is not None or not study.instance_keys or not result.instances:
        return None
    return await asyncio.to_thread(gw.store.get, study.instance_keys[top_index(result)])


@router.get("/studies/{study_id}", name="review_study")
async def study_page(request: Request, study_id: StudyId, gw: GW, me: Clinician) -> Response:
    """Image, heatmap, probability and the model's limits side by side, and the verdict form."""
    who, session = me
    study = await _study(gw, me, study_id, "review.study.read")
    try:
        results, reviews = await load_results(gw, study)
    except NotFound:
        results, reviews = [], []
    # The page is the first routed model's finding in full; other models' findings are listed.
    result = results[0] if results else None
    context: dict[str, Any] = {"title": "Study", "who": who, "csrf": session.csrf, "study": study}
    if result is not None:
        manifest = gw.manifest(result.model_name)
        dicom = await _top_instance(gw, study, result)
        try:
            subgroup = await asyncio.to_thread(_subgroup, dicom)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            subgroup = {"sex": "unknown", "age_band": "unknown"}
        model_dir = gw.settings.model_repository / result.model_name
        evaluation = _evaluation(model_dir / "evaluation" / "evaluation.json")
        top = max(result.instances, key=lambda i: i["probability"]) if result.instances else {}
        explanation = result.explanation or {}
        context.update(
            result=result,
            manifest=manifest,
            decision=REFER if result.refer else NO_REFER,
            placeholder_note=PLACEHOLDER_NOTE if result.placeholder else None,
            out_of_scope=out_of_scope_summary(result),
            out_of_scope_note=OUT_OF_SCOPE_NOTE,
            calibration=calibration_sentence(result.probability, manifest),
            subgroup=subgroup,
            performance=[
                p
                for p in (
                    subgroup_performance(evaluation, manifest, "sex", subgroup["sex"]),
                    subgroup_performance(evaluation, manifest, "age_band", subgroup["age_band"]),
                )
                if p is not None
            ],
            unlike=unlike_training(top.get("image_stats"), manifest),
            image=dicom is not None,
            heatmap=dicom is not None and explanation.get("status") == "available",
            explanation_status=explanation.get("status", "not requested"),
            other_findings=[
                {
                    "model": f"{r.model_name} v{r.model_version}",
                    "probability": r.probability,
                    "threshold": r.threshold,
                    "decision": REFER if r.refer else NO_REFER,
                    "out_of_scope": out_of_scope_summary(r),
                }
                for r in results[1:]
            ],
            reviews=reviews,
            agreement=agreement([r.verdict for r in reviews]),
            mine=next((r for r in reviews if r.reviewer == who.subject), None),
        )
    listing = await worklist(gw.sessions, who.tenant, WorklistQuery(state="preliminary", size=2))
    context["next_id"] = next((r.study_id for r in listing.rows if r.study_id != study.id), None)
    context["statement"] = ASSISTIVE_STATEMENT
    await gw.record(who, "review.study.read", "study", study.id)
    return render(request, "study.html", context)


@router.post("/studies/{study_id}/verdict", name="review_verdict")
async def verdict(
    request: Request,
    study_id: StudyId,
    gw: GW,
    me: Clinician,
    csrf: Annotated[str, Form()] = "",
    verdict: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    corrected_label: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Record the verdict through the API's review path, then show the study again."""
    who, session = me
    check_csrf(session, csrf)
    try:
        review = ReviewIn(
            verdict=verdict,  # type: ignore[arg-type]
            comment=comment.strip(),
            corrected_label=corrected_label or None,
        )
    except ValidationError as exc:
        message = "Choose agree, disagree or uncertain (a comment of up to 4000 characters)."
        raise ReviewPageError(400, message) from exc
    try:
        await record_review(gw, who, study_id, review)
    except NotFound as exc:
        raise ReviewPageError(404, "No such study, or it has no result to review yet.") from exc
    except UnprocessableInput as exc:
        raise ReviewPageError(422, "Choose a corrected label from the list, or none.") from exc
    url = request.url_for("review_study", study_id=study_id)
    return secured(RedirectResponse(str(url), status_code=303))


async def _image(gw: Gateway, me: Clinician, study_id: str, layer: str) -> bytes:
    study = await _study(gw, me, study_id, f"review.{layer}.read")
    try:
        result, _ = await load_result(gw, study)
        dicom = await _top_instance(gw, study, result)
        if dicom is None:
            raise NotFound("image deleted under the retention policy")
        if layer == "image":
            return await asyncio.to_thread(model_view_png, dicom)
        key = (result.explanation or {}).get("heatmap_key")
        if not key:
            raise NotFound("no heatmap")
        return await asyncio.to_thread(heatmap_png, await asyncio.to_thread(gw.store.get, key))
    except (SightlineError, OSError, ValueError) as exc:
        log.info("review %s layer unavailable: %s", layer, type(exc).__name__)
        raise ReviewPageError(404, "Image not available.") from exc


@router.get("/studies/{study_id}/image.png", name="review_image")
async def image(study_id: StudyId, gw: GW, me: Clinician) -> Response:
    """The de-identified image as the model saw it (centre square)."""
    return secured(Response(await _image(gw, me, study_id, "image"), media_type="image/png"))


@router.get("/studies/{study_id}/heatmap.png", name="review_heatmap")
async def heatmap(study_id: StudyId, gw: GW, me: Clinician) -> Response:
    """The Grad-CAM heatmap as a transparent colour layer of the same size."""
    return secured(Response(await _image(gw, me, study_id, "heatmap"), media_type="image/png"))
