"""The review workstation's browser session: a signed cookie, CSRF tokens and security headers.

The cookie holds the signed-in clinician (subject, tenant, roles from the verified token or the
development login) and a CSRF token; it is HttpOnly, SameSite=Lax, and Secure outside
development. Every form carries the CSRF token; a POST without the session's token is a 403.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape

from sightline_gateway.api.deps import GW, Gateway
from sightline_gateway.core.auth import Principal, Role

COOKIE = "sightline_review"
OIDC_COOKIE = "sightline_review_oidc"
PACKAGE = Path(__file__).resolve().parents[2]
#: Autoescaping on for every template: comments and reviewer names are user text.
templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(PACKAGE / "templates" / "review"),
        autoescape=select_autoescape(default=True),
    )
)

#: No inline script or style, nothing from another origin, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ReviewPageError(Exception):
    """Ends a review request with an HTML page (or a redirect to the login)."""

    def __init__(self, status: int, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.location = status, message, location


@dataclass(frozen=True)
class ReviewSession:
    """Who is signed in (``None`` before login) and the CSRF token of their forms."""

    csrf: str
    principal: Principal | None = None


def _serializer(gw: Gateway, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(gw.settings.jwt_secret, salt=f"sightline-review-{salt}")


def secure_cookies(gw: Gateway) -> bool:
    return gw.settings.environment != "development"


def read_session(request: Request, gw: Gateway) -> ReviewSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data: dict[str, Any] = _serializer(gw, "session").loads(raw, max_age=gw.settings.review_session_ttl_s)
    except BadSignature:
        return None
    who = data.get("who")
    principal = (
        Principal(who["sub"], who["tenant"], frozenset(who["roles"]), "session")
        if isinstance(who, dict)
        else None
    )
    return ReviewSession(csrf=str(data.get("csrf", "")), principal=principal)


def write_session(response: Response, gw: Gateway, session: ReviewSession) -> None:
    data: dict[str, Any] = {"csrf": session.csrf, "iat": int(time.time())}
    if session.principal is not None:
        p = session.principal
        data["who"] = {"sub": p.subject, "tenant": p.tenant, "roles": sorted(p.roles)}
    response.set_cookie(
        COOKIE,
        _serializer(gw, "session").dumps(data),
        max_age=gw.settings.review_session_ttl_s,
        path="/review",
        httponly=True,
        secure=secure_cookies(gw),
        samesite="lax",
    )


def sign_flow(gw: Gateway, data: dict[str, str]) -> str:
    return _serializer(gw, "oidc").dumps(data)


def read_flow(gw: Gateway, raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    try:
        data: dict[str, str] = _serializer(gw, "oidc").loads(raw, max_age=600)
    except BadSignature:
        return None
    return data


def new_session(principal: Principal | None = None) -> ReviewSession:
    return ReviewSession(csrf=secrets.token_urlsafe(32), principal=principal)


def check_csrf(session: ReviewSession | None, submitted: str | None) -> None:
    """403 unless the form's token is the session's (compared in constant time)."""
    if session is None or not submitted or not hmac.compare_digest(session.csrf, submitted):
        raise ReviewPageError(403, "The form's security token is missing or out of date. Reload and retry.")


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A template with the security headers; ``title`` never holds patient data."""
    response = templates.TemplateResponse(request, name, context, status_code=status)
    secured(response)
    return response


async def clinician(request: Request, gw: GW) -> tuple[Principal, ReviewSession]:
    """The signed-in clinician of this tenant, else a redirect to the login (or a 403 page)."""
    session = read_session(request, gw)
    if session is None or session.principal is None:
        raise ReviewPageError(303, "Sign in to review", location=str(request.url_for("review_login")))
    who = session.principal
    if not ({Role.CLINICIAN.value, Role.ADMIN.value} & who.roles):
        await gw.record(who, "review.ui.refused", "review-ui", None, outcome="forbidden")
        raise ReviewPageError(
            403, "The review workstation is for clinicians; your account has no clinician role."
        )
    await gw.limiter.check(who.client_id)
    return who, session


Clinician = Annotated[tuple[Principal, ReviewSession], Depends(clinician)]
