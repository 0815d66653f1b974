"""The public API: one router per resource under ``/v1``, and DICOMweb under ``/dicomweb``.

Routes stay thin: parse, authorise, call the pipeline, audit.
"""

from __future__ import annotations

from fastapi import APIRouter

from sightline_gateway.api.routes import (
    admin,
    audit,
    dicomweb,
    lifecycle,
    models,
    objects,
    outcomes,
    privacy,
    results,
    studies,
)

router = APIRouter(prefix="/v1")
for _resource in (studies, results, outcomes, models, audit, admin, lifecycle, objects, privacy):
    router.include_router(_resource.router)

__all__ = ["dicomweb", "router"]
