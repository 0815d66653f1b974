"""Application factory of the de-identification service."""

from __future__ import annotations

from fastapi import FastAPI
from sightline_common.web import service_app

from sightline_deid.api.routes import build_router
from sightline_deid.core import burned_in
from sightline_deid.core.engine import Deidentifier, Limits
from sightline_deid.core.recipe import Recipe, load_recipe
from sightline_deid.settings import DeidSettings

SERVICE = "deid"


def create_app(settings: DeidSettings, recipe: Recipe | None = None) -> FastAPI:
    """Build the app; loading the recipe here means a bad recipe stops start-up, not a request."""
    recipe = recipe or load_recipe(settings.recipe)
    detector = burned_in.detector_for(
        recipe.burned_in.ocr, timeout_s=settings.ocr_timeout_s, max_frames=settings.ocr_max_frames
    )
    engine = Deidentifier(
        recipe,
        settings.pseudonym_key.get_secret_value().encode(),
        Limits(
            max_bytes=settings.max_request_bytes,
            max_inflated_bytes=settings.max_inflated_bytes,
            max_decoded_pixel_bytes=settings.max_decoded_pixel_bytes,
            max_compression_ratio=settings.max_compression_ratio,
            max_sequence_depth=settings.max_sequence_depth,
        ),
        detector,
    )

    async def recipe_loaded() -> bool:
        return bool(engine.recipe.rules) and engine.recipe.private_rule is not None

    async def ocr_installed() -> bool:
        # Objects the recipe sends to OCR are refused (503) without it (or without its model).
        return detector.available()

    app = service_app(SERVICE, title="Sightline de-identification",
                      ready_checks={"recipe": recipe_loaded, "ocr": ocr_installed})
    app.state.engine = engine
    app.include_router(build_router(engine))
    return app
