"""Builds the gateway application."""

from __future__ import annotations

from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from sightline_common.web import service_app
from sightline_gateway.clients.health import http_ready
from sightline_gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings) -> FastAPI:
    """The gateway: ready only while deid, preprocess (and so Triton) and explain are ready."""
    http = httpx.AsyncClient()

    async def deid() -> bool:
        return await http_ready(http, settings.deid_url)

    async def preprocess() -> bool:
        return await http_ready(http, settings.preprocess_http)

    async def explain() -> bool:
        return await http_ready(http, settings.explain_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await http.aclose()

    app = service_app(
        "gateway",
        title="Sightline API",
        ready_checks={"deid": deid, "preprocess": preprocess, "explain": explain},
        lifespan=lifespan,
    )
    return app
