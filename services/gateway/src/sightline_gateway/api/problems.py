"""OpenAPI responses every router shares: problem details per status code."""

from __future__ import annotations

from typing import Any

PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, **PROBLEM}
    for code, desc in (
        (400, "malformed request"),
        (401, "not authenticated"),
        (403, "role or signature refused"),
        (404, "not found (or another tenant's)"),
        (422, "well-formed but unprocessable"),
        (429, "rate limited (see Retry-After)"),
        (503, "a dependency is unavailable"),
    )
}
UPLOAD_ERRORS = {
    **ERRORS,
    422: {
        "description": "well-formed but unprocessable; code no-model-accepts: no model enabled for "
        "the tenant accepts the study (refused before de-identification, nothing kept)",
        **PROBLEM,
    },
    413: {"description": "upload too large", **PROBLEM},
    415: {"description": "unsupported content type", **PROBLEM},
}
