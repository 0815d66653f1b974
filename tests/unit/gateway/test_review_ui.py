"""The review workstation (/review) on the gateway with fake dependencies: login, CSRF, CSP,
tenant isolation, the clinician role, and a verdict that finalises the result as the API does."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sightline_gateway.api.review.session import COOKIE, CSP
from sightline_gateway.core.objects import explain_prefix

from tests.unit.gateway.gateway_fixtures import PHI, Harness, harness, token

STUDY_URL = re.compile(r'href="(/review/studies/[0-9a-f-]{36})"')


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    with harness(tmp_path, environment="development") as hh:
        yield hh


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


def login(
    h: Harness, tenant: str = "hospital-a", roles: tuple[str, ...] = ("clinician",), user: str = "dr-a"
) -> None:
    h.client.cookies.clear()
    page = h.client.get("/review/login")
    assert page.status_code == 200
    r = h.client.post(
        "/review/login/dev",
        data={"csrf": csrf_of(page.text), "subject": user, "tenant": tenant, "role": list(roles)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def submit(h: Harness) -> str:
    r = h.submit(mode="sync")
    assert r.status_code == 200, r.text
    return r.headers["Location"].rsplit("/", 1)[1]


def test_pages_need_a_session_and_redirect_to_login(h: Harness) -> None:
    r = h.client.get("/review/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/review/login")


def test_session_cookie_flags_and_csp(h: Harness) -> None:
    page = h.client.get("/review/login")
    assert page.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    r = h.client.post(
        "/review/login/dev",
        data={"csrf": csrf_of(page.text), "subject": "dr-a", "tenant": "hospital-a", "role": ["clinician"]},
        follow_redirects=False,
    )
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # development only; every other environment sets Secure
    worklist = h.client.get("/review/")
    assert worklist.status_code == 200 and worklist.headers["content-security-policy"] == CSP
    assert "<script>" not in worklist.text and " style=" not in worklist.text


def test_login_and_logout_need_the_csrf_token(h: Harness) -> None:
    h.client.get("/review/login")
    for token_value in ("", "wrong"):
        r = h.client.post(
            "/review/login/dev", data={"csrf": token_value, "subject": "x", "tenant": "hospital-a"}
        )
        assert r.status_code == 403
    login(h)
    assert h.client.post("/review/logout", data={"csrf": "wrong"}).status_code == 403


def test_dev_login_exists_only_in_development(tmp_path: Path) -> None:
    with harness(tmp_path) as hh:  # environment=test
        page = hh.client.get("/review/login")
        assert "Development login" not in page.text
        r = hh.client.post("/review/login/dev", data={"csrf": "x", "subject": "x", "tenant": "hospital-a"})
        assert r.status_code == 404


def test_verdict_finalises_through_the_api_path(h: Harness) -> None:
    study_id = submit(h)
    login(h)
    listing = h.client.get("/review/?state=preliminary")
    assert f"/review/studies/{study_id}" in listing.text
    page = h.client.get(f"/review/studies/{study_id}")
    assert page.status_code == 200
    text = page.text
    assert "does not diagnose" in text and "Of 100 lesions scored like this" in text
    assert 'id="opacity"' in text or "Heatmap:" in text
    assert "<title>Study · Sightline review</title>" in text and PHI not in text
    # no token, wrong token: refused, nothing recorded
    for bad in ({}, {"csrf": "forged"}):
        r = h.client.post(f"/review/studies/{study_id}/verdict", data={"verdict": "agree", **bad})
        assert r.status_code == 403
    assert h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()["status"] == "preliminary"
    labels = {"model": "derm-cnn", "version": "1", "verdict": "disagree"}
    before = REGISTRY.get_sample_value("sightline_review_verdicts_total", labels) or 0.0
    r = h.client.post(
        f"/review/studies/{study_id}/verdict",
        data={"csrf": csrf_of(text), "verdict": "disagree", "comment": "benign naevus"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert REGISTRY.get_sample_value("sightline_review_verdicts_total", labels) == before + 1
    assert f"/review/studies/{study_id}" not in h.client.get("/review/?state=preliminary").text
    assert f"/review/studies/{study_id}" in h.client.get("/review/?state=reviewed").text
    fhir = h.client.get(f"/v1/studies/{study_id}/result.fhir", headers=token()).json()
    assert fhir["entry"][0]["resource"]["status"] == "final"
    audit = h.client.get("/v1/audit", headers=token(roles=("auditor",))).json()["events"]
    assert any(e["action"] == "review.create" and e["actor"] == "dev:dr-a" for e in audit)
    # a second clinician agrees: the disagreement between reviewers is shown
    login(h, user="dr-b")
    second = h.client.get(f"/review/studies/{study_id}")
    h.client.post(
        f"/review/studies/{study_id}/verdict",
        data={"csrf": csrf_of(second.text), "verdict": "agree", "comment": "<script>x()</script>"},
    )
    shown = h.client.get(f"/review/studies/{study_id}").text
    assert "Reviewers disagree" in shown and "dev:dr-a" in shown and "dev:dr-b" in shown
    assert "<script>x()" not in shown and "&lt;script&gt;x()" in shown


def test_another_tenants_study_is_neither_listed_nor_reachable(h: Harness) -> None:
    study_id = submit(h)
    login(h, tenant="hospital-b")
    assert study_id not in h.client.get("/review/").text
    for path in ("", "/image.png", "/heatmap.png"):
        assert h.client.get(f"/review/studies/{study_id}{path}").status_code == 404
    page = h.client.get("/review/")
    r = h.client.post(
        f"/review/studies/{study_id}/verdict", data={"csrf": csrf_of(page.text), "verdict": "agree"}
    )
    assert r.status_code == 404


@pytest.mark.parametrize("roles", [("auditor",), ("submitter",)])
def test_the_clinician_role_is_required(h: Harness, roles: tuple[str, ...]) -> None:
    study_id = submit(h)
    login(h, roles=roles)
    assert h.client.get("/review/").status_code == 403
    assert h.client.get(f"/review/studies/{study_id}").status_code == 403


def test_image_layers_are_pngs_of_one_size(h: Harness) -> None:
    from PIL import Image

    study_id = submit(h)
    heat = np.linspace(0, 1, 112 * 112, dtype=np.float16).reshape(112, 112)
    buf = io.BytesIO()
    np.save(buf, heat, allow_pickle=False)
    h.store.put(explain_prefix(study_id) + "heatmap.npy", buf.getvalue(), "application/octet-stream")
    login(h)
    sizes = []
    for layer in ("image", "heatmap"):
        r = h.client.get(f"/review/studies/{study_id}/{layer}.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        sizes.append(Image.open(io.BytesIO(r.content)).size)
    assert sizes[0] == sizes[1]


def test_worklist_filters_and_urls_carry_no_phi(h: Harness) -> None:
    submit(h)
    login(h)
    for query in (
        "state=reviewed",
        "decision=referred",
        "decision=not-referred&version=1",
        "state=&decision=",
    ):
        r = h.client.get(f"/review/?{query}")
        assert r.status_code == 200 and PHI not in r.text
    assert h.client.get("/review/?state=bogus").status_code == 400
    assert all(PHI not in u for u in STUDY_URL.findall(h.client.get("/review/").text))


def test_oidc_authorization_code_with_pkce(tmp_path: Path) -> None:
    """The issuer's endpoints from discovery, S256 PKCE, state checked, the access token verified."""
    import httpx
    from sightline_gateway.api.review.session import OIDC_COOKIE
    from sightline_gateway.core.auth import mint_dev_token

    from tests.unit.gateway.gateway_fixtures import SECRET

    issuer, seen = "https://idp.example", {}

    def idp(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={"authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token"},
            )
        seen["token_request"] = request.content.decode()
        access = mint_dev_token(SECRET, issuer, "sightline", "hospital-a", ["clinician"], 600, subject="dr-o")
        return httpx.Response(200, json={"access_token": access, "token_type": "Bearer", "expires_in": 600})

    with harness(tmp_path, jwt_issuer=issuer, review_oidc_client_id="sightline-review") as hh:
        hh.client.app.state.review_oidc_transport = {"transport": httpx.MockTransport(idp)}  # type: ignore[attr-defined]
        assert "Sign in with your organisation" in hh.client.get("/review/login").text
        start = hh.client.get("/review/login/oidc", follow_redirects=False)
        assert start.status_code == 303
        location = httpx.URL(start.headers["location"])
        assert str(location).startswith(f"{issuer}/authorize")
        assert location.params["code_challenge_method"] == "S256" and location.params["code_challenge"]
        assert "Secure" in start.headers["set-cookie"] and "HttpOnly" in start.headers["set-cookie"]
        flow = start.cookies[OIDC_COOKIE]
        state = location.params["state"]
        hh.client.cookies.clear()
        bad = hh.client.get(
            "/review/login/callback",
            params={"code": "c", "state": "forged"},
            headers={"Cookie": f"{OIDC_COOKIE}={flow}"},
        )
        assert bad.status_code == 403
        done = hh.client.get(
            "/review/login/callback",
            params={"code": "c", "state": state},
            headers={"Cookie": f"{OIDC_COOKIE}={flow}"},
            follow_redirects=False,
        )
        assert done.status_code == 303, done.text
        assert "code_verifier=" in seen["token_request"]
        session_cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
        assert (
            "Secure" in session_cookie and "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
        )
