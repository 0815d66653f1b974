"""Signing in to the review workstation: OIDC Authorization Code + PKCE, or a development login.

OIDC: the configured issuer's discovery document gives the endpoints; the access token the
issuer returns is verified by the gateway's own :class:`TokenVerifier` (issuer, audience,
signature, tenant and roles claims), so a browser session carries exactly what a bearer token
would. The development login (``environment=development`` only, as under ``sightline up``) signs
in any subject of any tenant and exists so the workstation can be tried without an identity
provider.
"""

from __future__ import annotations

import logging
import warnings
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sightline_common.errors import SightlineError
from sightline_common.http import is_valid_tenant

from sightline_gateway.api.deps import GW, Gateway
from sightline_gateway.api.review.session import (
    OIDC_COOKIE,
    ReviewPageError,
    check_csrf,
    new_session,
    read_flow,
    read_session,
    render,
    secure_cookies,
    secured,
    sign_flow,
    write_session,
)
from sightline_gateway.core.auth import ALL_ROLES, Principal, Role

log = logging.getLogger(__name__)
router = APIRouter()
DEV_ROLES = (Role.CLINICIAN.value,)


def _dev_login(gw: Gateway) -> bool:
    return gw.settings.environment == "development"


def _oidc(gw: Gateway) -> bool:
    return bool(gw.settings.review_oidc_client_id)


@router.get("/login", name="review_login")
async def login_page(request: Request, gw: GW) -> Response:
    """The sign-in page: the organisation's identity provider, and in development a local login."""
    session = read_session(request, gw)
    if session is None or session.principal is not None:
        session = new_session()
    response = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "csrf": session.csrf,
            "dev_login": _dev_login(gw),
            "oidc": _oidc(gw),
            "roles": sorted(ALL_ROLES),
        },
    )
    write_session(response, gw, session)
    return response


@router.post("/login/dev", name="review_dev_login")
async def dev_login(
    request: Request,
    gw: GW,
    csrf: Annotated[str, Form()] = "",
    subject: Annotated[str, Form(max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")] = "dev-clinician",
    tenant: Annotated[str, Form(max_length=64)] = "dev-hospital",
    role: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Development only: sign in as any clinician of any tenant (404 in every other environment)."""
    if not _dev_login(gw):
        raise ReviewPageError(404, "Not found")
    check_csrf(read_session(request, gw), csrf)
    roles = frozenset(role or DEV_ROLES) & ALL_ROLES
    if not is_valid_tenant(tenant) or not roles:
        raise ReviewPageError(400, "Choose a valid tenant and at least one role.")
    who = Principal(f"dev:{subject}", tenant, roles, "session")
    await gw.ensure_tenant(tenant)
    await gw.record(who, "review.login.dev", "session", None)
    return _signed_in(request, gw, who)


def _signed_in(request: Request, gw: Gateway, who: Principal) -> Response:
    response = RedirectResponse(str(request.url_for("review_worklist")), status_code=303)
    write_session(response, gw, new_session(who))
    response.delete_cookie(OIDC_COOKIE, path="/review")
    return secured(response)


def _client(gw: Gateway, request: Request, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from authlib.integrations.httpx_client import AsyncOAuth2Client

    return AsyncOAuth2Client(
        client_id=gw.settings.review_oidc_client_id,
        client_secret=gw.settings.review_oidc_client_secret,
        redirect_uri=str(request.url_for("review_oidc_callback")),
        scope="openid profile",
        code_challenge_method="S256",
        timeout=10.0,
        **kwargs,
    )


async def _discovery(gw: Gateway, client: Any) -> dict[str, Any]:
    url = gw.settings.jwt_issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = await client.request("GET", url, withhold_token=True)
        response.raise_for_status()
        metadata: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("OIDC discovery failed: %s", type(exc).__name__)
        raise ReviewPageError(503, "The identity provider cannot be reached; try again shortly.") from exc
    return metadata


@router.get("/login/oidc", name="review_oidc_start")
async def oidc_start(request: Request, gw: GW) -> Response:
    """Redirect to the issuer's authorization endpoint with a fresh state and PKCE challenge."""
    if not _oidc(gw):
        raise ReviewPageError(404, "Single sign-on is not configured.")
    from authlib.common.security import generate_token

    verifier = generate_token(64)
    async with _client(gw, request, **request.app.state.review_oidc_transport) as client:
        metadata = await _discovery(gw, client)
        uri, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier
        )
    response = RedirectResponse(uri, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        sign_flow(gw, {"state": state, "verifier": verifier}),
        max_age=600,
        path="/review",
        httponly=True,
        secure=secure_cookies(gw),
        samesite="lax",
    )
    return secured(response)


@router.get("/login/callback", name="review_oidc_callback")
async def oidc_callback(request: Request, gw: GW, code: str = "", state: str = "") -> Response:
    """Exchange the code (with the PKCE verifier) and verify the access token like any bearer token."""
    flow = read_flow(gw, request.cookies.get(OIDC_COOKIE))
    if not _oidc(gw) or flow is None or not code or not state or flow.get("state") != state:
        raise ReviewPageError(403, "The sign-in could not be verified; start again.")
    async with _client(gw, request, state=state, **request.app.state.review_oidc_transport) as client:
        metadata = await _discovery(gw, client)
        try:
            token = await client.fetch_token(
                metadata["token_endpoint"], code=code, code_verifier=flow["verifier"]
            )
        except Exception as exc:
            log.warning("OIDC code exchange failed: %s", type(exc).__name__)
            raise ReviewPageError(403, "The identity provider refused the sign-in.") from exc
    try:
        who = gw.verifier.verify(str(token.get("access_token", "")))
    except SightlineError as exc:
        raise ReviewPageError(403, "The identity provider's token was not accepted.") from exc
    await gw.ensure_tenant(who.tenant)
    await gw.record(who, "review.login.oidc", "session", None)
    return _signed_in(request, gw, Principal(who.subject, who.tenant, who.roles, "session"))


@router.post("/logout", name="review_logout")
async def logout(request: Request, gw: GW, csrf: Annotated[str, Form()] = "") -> Response:
    session = read_session(request, gw)
    check_csrf(session, csrf)
    response = RedirectResponse(str(request.url_for("review_login")), status_code=303)
    response.delete_cookie("sightline_review", path="/review")
    return secured(response)
