"""Liveness and readiness, the same shape in every service.

``/health/live`` checks only the process. ``/health/ready`` runs the service's dependency
checks and answers 503 with which one failed; it is never ready unconditionally. Checks run in
:func:`probe_context`: nothing they call (SQL, HTTP, Triton's gRPC ``ServerReady``) is traced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.utils import suppress_instrumentation

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


@contextmanager
def probe_context() -> Iterator[None]:
    """Run a health or metrics probe untraced: OpenTelemetry instrumentation is suppressed inside.

    Probes are most of the requests a service sees; traced, their client calls (a database
    ``SELECT 1``, Triton's ``ServerReady``) would each become a root trace. Tasks started inside
    inherit the suppression (asyncio copies the context).
    """
    with suppress_instrumentation():
        yield


async def run_checks(checks: Mapping[str, ReadyCheck], timeout_s: float = 2.0) -> dict[str, bool]:
    """Run every check concurrently; a check that raises or times out counts as not ready."""

    async def one(name: str, check: ReadyCheck) -> tuple[str, bool]:
        try:
            return name, bool(await asyncio.wait_for(check(), timeout_s))
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.info("readiness check %s failed: %s", name, type(exc).__name__)
            return name, False

    results = await asyncio.gather(*(one(n, c) for n, c in checks.items()))
    return dict(results)


def health_router(
    checks: Mapping[str, ReadyCheck], dependencies: Callable[[], Mapping[str, bool]] | None = None
) -> APIRouter:
    """Routes ``/health/live`` and ``/health/ready`` for the given readiness checks.

    ``dependencies``: the current state of what the service can do without (it queues work for
    them); reported in the body, with the ones down under ``degraded``, but never gating.
    """
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        with probe_context():
            results = await run_checks(checks)
        ok = all(results.values())
        body: dict[str, object] = {"status": "ready" if ok else "not-ready", "checks": results}
        if dependencies is not None:
            state = dict(dependencies())
            body["dependencies"] = state
            body["degraded"] = sorted(name for name, up in state.items() if not up)
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
