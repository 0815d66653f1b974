"""The clinician review workstation under ``/review``: server-rendered pages over the gateway's API.

Not part of the public JSON contract (``include_in_schema=False``). Every asset is served from
this package: no CDN, a strict Content-Security-Policy, no inline script or style.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from sightline_gateway.api.review import login, pages
from sightline_gateway.api.review.errors import install_html_errors
from sightline_gateway.api.review.session import PACKAGE, ReviewPageError, render, secured

STATIC = PACKAGE / "static" / "review"
_TYPES = {".css": "text/css", ".js": "text/javascript"}

router = APIRouter(prefix="/review", include_in_schema=False)
router.include_router(login.router)
router.include_router(pages.router)


@router.get("/static/{name}", name="review_static")
async def static(name: str) -> Response:
    """The workstation's own CSS and JS (a fixed list: no directory walking)."""
    path = STATIC / name
    if Path(name).name != name or path.suffix not in _TYPES or not path.is_file():
        raise ReviewPageError(404, "Not found")
    response = Response(path.read_bytes(), media_type=_TYPES[path.suffix])
    secured(response).headers["Cache-Control"] = "no-cache"
    return response


@router.api_route("/{rest:path}", methods=["GET", "POST"], name="review_not_found")
async def not_found(rest: str) -> Response:
    """Anything else under /review: the workstation's 404 page, not the API's problem body."""
    raise ReviewPageError(404, "Page not found.")


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReviewPageError)
    if exc.location is not None:
        return secured(RedirectResponse(exc.location, status_code=exc.status))
    return render(request, "error.html", {"title": "Error", "message": exc.message}, status=exc.status)


def install_review(app: FastAPI, oidc_transport: dict[str, object] | None = None) -> None:
    """Mount the workstation on the gateway app; ``oidc_transport``: httpx options for tests."""
    app.state.review_oidc_transport = oidc_transport or {}
    app.include_router(router)
    app.add_exception_handler(ReviewPageError, _page_error)
    install_html_errors(app)
