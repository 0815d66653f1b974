"""HTTP helpers every Sightline service shares: bounded request bodies, tenant names, and the
mapping between problem-details bodies and :mod:`sightline_common.errors` in both directions.

Kept here once so the services cannot drift apart (they had three body limiters, one of which
read the whole body before checking its size).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from sightline_common.errors import (
    DependencyUnavailable,
    InvalidInput,
    PayloadTooLarge,
    SightlineError,
    UnprocessableInput,
    error_class,
)

TENANT_HEADER = "X-Sightline-Tenant"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TENANT = re.compile(TENANT_PATTERN)

#: Codes a downstream service may send that keep their meaning for our caller. Anything else
#: (internal, integrity, auth...) is the downstream's own business and maps by status instead.
INPUT_CODES = frozenset({"invalid-input", "unprocessable", "payload-too-large", "unsupported-media-type"})


def is_valid_tenant(value: object) -> bool:
    """Whether ``value`` is a tenant name (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    return isinstance(value, str) and _TENANT.match(value) is not None


def media_type(request: Request) -> str:
    """The request's media type without parameters, lower-case (``""`` when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes.

    A declared Content-Length over the limit is refused before reading anything; otherwise the
    stream is read chunk by chunk and abandoned at the limit, so an oversized or lying upload
    never sits whole in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("invalid Content-Length header", reason="content-length")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the {limit} byte limit", reason="oversized", limit=limit)


def error_from_problem(service: str, status: int, body: Any) -> SightlineError:
    """Our error for a downstream service's problem-details answer.

    A 5xx or 429 is the dependency's trouble (retryable); a 4xx keeps the downstream's code when
    it is about the input, since the input is our caller's. The downstream's detail is PHI-free
    by contract and is passed on, shortened.
    """
    code, detail = "", ""
    if isinstance(body, dict):
        code, detail = str(body.get("code", "")), str(body.get("detail", ""))[:300]
    if status >= 500 or status == 429:
        return DependencyUnavailable(f"{service} unavailable ({status})")
    return error_for_code(service, code, detail, default=UnprocessableInput if status == 422 else None,
                          status=status)


def error_for_code(
    service: str,
    code: str,
    detail: str,
    *,
    default: type[SightlineError] | None = None,
    status: int | None = None,
) -> SightlineError:
    """Our error for a downstream error ``code`` about the input; ``default`` when not one."""
    cls = error_class(code) if code in INPUT_CODES else None
    if cls is None and status == 413:
        cls = PayloadTooLarge
    cls = cls or default or InvalidInput
    return cls(f"{service}: {detail[:300] or 'refused'}")
