"""Explanation artifacts through time-limited signed links (the local store's presigned URLs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sightline_common.errors import NotFound
from sightline_common.storage import check_key

from sightline_gateway.api.deps import GW
from sightline_gateway.api.problems import ERRORS

router = APIRouter()


@router.get(
    "/objects/{key:path}",
    tags=["results"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}, **ERRORS},
)
async def get_object(
    key: str,
    gw: GW,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """A stored explanation artifact through a time-limited signed link (no other credential)."""
    check_key(key)
    if not key.startswith("studies/") or "/explain/" not in key:
        raise NotFound("object not found")
    gw.signer.check(key, expires, signature)
    data = await asyncio.to_thread(gw.store.get, key)
    media = "image/png" if key.endswith(".png") else "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=60"})
