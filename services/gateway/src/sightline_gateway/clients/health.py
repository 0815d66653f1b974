"""Readiness of the services the gateway needs."""

from __future__ import annotations

import httpx


async def http_ready(client: httpx.AsyncClient, base_url: str) -> bool:
    response = await client.get(f"{base_url.rstrip('/')}/health/ready", timeout=2.0)
    return response.status_code == 200
