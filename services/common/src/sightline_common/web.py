"""The FastAPI scaffolding every HTTP service shares: errors, health, metrics, tracing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sightline_common import metrics
from sightline_common.errors import SightlineError, problem_body
from sightline_common.health import ReadyCheck, health_router
from sightline_common.metrics import instrument_app

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    """A problem-details response for errors that are not :class:`SightlineError` instances."""
    return JSONResponse(
        problem_body(status, title, detail, code, **extra), status_code=status, media_type=PROBLEM_JSON
    )


def install_error_handlers(app: FastAPI, service: str) -> None:
    """Map domain errors, validation errors and stray exceptions to RFC 9457 bodies."""

    @app.exception_handler(SightlineError)
    async def _domain(request: Request, exc: SightlineError) -> JSONResponse:
        metrics.ERRORS.labels(service, exc.code).inc()
        headers = {}
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        return JSONResponse(
            exc.problem(instance=request.url.path),
            status_code=exc.status,
            media_type=PROBLEM_JSON,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.ERRORS.labels(service, "validation").inc()
        # Locations and messages only: pydantic's "input" field would echo caller values.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem_response(
            422, "Unprocessable Content", "request validation failed", "validation", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        metrics.ERRORS.labels(service, f"http-{exc.status_code}").inc()
        return problem_response(exc.status_code, str(exc.detail), str(exc.detail), f"http-{exc.status_code}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        metrics.ERRORS.labels(service, "internal").inc()
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        return problem_response(500, "Internal Server Error", "internal error (see trace)", "internal")


def service_app(
    service: str,
    *,
    title: str,
    ready_checks: Mapping[str, ReadyCheck],
    version: str = "0.1.0",
    dependencies: Callable[[], Mapping[str, bool]] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with health, metrics, problem-details errors and OpenTelemetry.

    ``dependencies``: non-gating dependency states for ``/health/ready`` (see ``health_router``).
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI(title=title, version=version, **fastapi_kwargs)
    install_error_handlers(app, service)
    instrument_app(app, service)
    app.include_router(health_router(ready_checks, dependencies))
    FastAPIInstrumentor.instrument_app(app, excluded_urls="health/live,health/ready,metrics")
    return app
