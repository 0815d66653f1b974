"""HTML error pages under ``/review``: a browser is never shown a JSON problem body there.

The API's problem-details handlers stay in charge everywhere else; under ``/review`` a domain
error or a validation error becomes the workstation's error page, with the same
status code (and ``Retry-After`` on a 429) and a fixed message that echoes nothing of the request.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sightline_common.errors import SightlineError

from sightline_gateway.api.review.session import render

PREFIX = "/review"
MESSAGES = {
    403: "You are not allowed to do that.",
    404: "Page not found.",
    422: "The request could not be processed: check the address or the form, then retry.",
    429: "Too many requests: wait a few seconds, then retry.",
}
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _status(exc: Exception) -> int:
    return int(exc.status) if isinstance(exc, SightlineError) else 422  # else RequestValidationError


def _html_under_review(previous: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(PREFIX):
            response = previous(request, exc)
            return await response if inspect.isawaitable(response) else response
        status = _status(exc)
        message = MESSAGES.get(status) or f"{HTTPStatus(status).phrase}."
        response = render(request, "error.html", {"title": "Error", "message": message}, status=status)
        if isinstance(exc, SightlineError) and "retry_after" in exc.extra:
            response.headers["Retry-After"] = str(exc.extra["retry_after"])
        return response

    return handle


def install_html_errors(app: FastAPI) -> None:
    """Wrap the app's problem-details handlers so that ``/review`` answers with HTML pages."""
    for kind in (SightlineError, RequestValidationError):
        previous = app.exception_handlers.get(kind)
        if previous is not None:
            app.add_exception_handler(kind, _html_under_review(previous))
