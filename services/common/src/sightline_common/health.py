"""Liveness and readiness, the same shape in every service.

``/health/live`` checks only the process. ``/health/ready`` runs the service's dependency
checks and answers 503 with which one failed; it is never ready unconditionally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


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
        results = await run_checks(checks)
        ok = all(results.values())
        body: dict[str, object] = {"status": "ready" if ok else "not-ready", "checks": results}
        if dependencies is not None:
            state = dict(dependencies())
            body["dependencies"] = state
            body["degraded"] = sorted(name for name, up in state.items() if not up)
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
