"""HTTP routes: ``POST /v1/deidentify`` (application/dicom in, application/dicom out).

Beside the file, a response carries two headers: the summary (counts and flags) and the file's
quasi-identifier class keys (:data:`CLASSES_HEADER`: keyed hashes the gateway counts to measure
k-anonymity, never the values) with whether a generalised output may be asked for (the recipe
allows it and it would change what the file shows). A request with
:data:`GENERALISE_HEADER` set to ``1`` asks for the generalised output.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request, Response
from sightline_common.errors import InvalidInput, SightlineError, UnsupportedMediaType
from sightline_common.http import TENANT_HEADER, is_valid_tenant, media_type, read_body
from sightline_common.metrics import STAGE_DURATION
from starlette.concurrency import run_in_threadpool

from sightline_deid.core.engine import Deidentifier
from sightline_deid.metrics import ACTIONS, OUTCOMES

log = logging.getLogger(__name__)

DICOM = "application/dicom"
SUMMARY_HEADER = "X-Sightline-Deid-Summary"
RECIPE_HEADER = "X-Sightline-Deid-Recipe"
CLASSES_HEADER = "X-Sightline-Deid-Classes"
GENERALISE_HEADER = "X-Sightline-Deid-Generalise"


def build_router(engine: Deidentifier) -> APIRouter:
    """Routes bound to one engine (recipe, secret, limits)."""
    router = APIRouter(tags=["deid"])

    @router.post(
        "/v1/deidentify",
        response_class=Response,
        responses={200: {"content": {DICOM: {}}, "description": "the de-identified DICOM file"}},
        summary="De-identify one DICOM Part 10 file for the calling tenant",
    )
    async def deidentify(request: Request) -> Response:
        if media_type(request) != DICOM:
            raise UnsupportedMediaType("send the file as application/dicom", reason="media-type")
        tenant = request.headers.get(TENANT_HEADER, "")
        if not is_valid_tenant(tenant):
            raise InvalidInput(f"header {TENANT_HEADER} is missing or malformed", reason="tenant")
        start = time.perf_counter()
        try:
            data = await read_body(request, engine.limits.max_bytes)
            if not data:
                raise InvalidInput("empty body", reason="not-dicom")
            generalise = request.headers.get(GENERALISE_HEADER, "0") == "1"
            result = await run_in_threadpool(engine.deidentify, data, tenant, generalise=generalise)
        except SightlineError as exc:
            OUTCOMES.labels(str(exc.extra.get("reason", exc.code))).inc()
            log.info("deid refused: %s", exc.extra.get("reason", exc.code))
            raise
        finally:
            STAGE_DURATION.labels("deid", "deid").observe(time.perf_counter() - start)
        OUTCOMES.labels("ok").inc()
        for action, n in result.summary.actions.items():
            ACTIONS.labels(action).inc(n)
        summary = result.summary.as_dict()
        log.info(
            "deid ok recipe=%s actions=%d bytes_out=%d",
            engine.recipe.label,
            sum(result.summary.actions.values()),
            len(result.data),
        )
        headers = {
            SUMMARY_HEADER: json.dumps(summary, separators=(",", ":")),
            RECIPE_HEADER: engine.recipe.label,
        }
        if result.classes is not None:
            headers[CLASSES_HEADER] = json.dumps(
                {
                    "exact": result.classes.exact,
                    "generalised": result.classes.generalised,
                    "can_generalise": engine.recipe.risk.generalise_below_k and result.classes.generalisable,
                },
                separators=(",", ":"),
            )
        return Response(content=result.data, media_type=DICOM, headers=headers)

    @router.get("/v1/recipe", summary="The active recipe: name, version, options and digest")
    async def recipe() -> dict[str, object]:
        r = engine.recipe
        return {
            "name": r.name,
            "version": r.version,
            "options": dict(r.options),
            "sha256": r.sha256,
            "rules": len(r.rules),
            "generalise_below_k": r.risk.generalise_below_k,
        }

    return router
