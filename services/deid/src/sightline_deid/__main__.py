"""``python -m sightline_deid``: build settings from the environment, then serve."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError
from sightline_common.logging import configure_logging
from sightline_common.telemetry import setup_tracing

from sightline_deid.app import SERVICE, create_app
from sightline_deid.core.recipe import RecipeError
from sightline_deid.settings import DeidSettings

log = logging.getLogger("sightline_deid")


def main() -> int:
    """Start the service; exit 2 (without serving) on missing or unsafe settings or a bad recipe."""
    try:
        settings = DeidSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        configure_logging(SERVICE, json_output=False)
        fields = ", ".join(".".join(map(str, e["loc"])) or "settings" for e in exc.errors())
        log.error("invalid settings (%s); SIGHTLINE_DEID_RECIPE is required", fields)
        return 2
    configure_logging(SERVICE, json_output=settings.log_json, level=settings.log_level)
    setup_tracing(SERVICE, settings.telemetry)
    try:
        app = create_app(settings)
    except RecipeError as exc:
        log.error("recipe refused: %s", exc)
        return 2
    log.info("deid starting on %s:%d with recipe %s", settings.host, settings.port,
             app.state.engine.recipe.label)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
