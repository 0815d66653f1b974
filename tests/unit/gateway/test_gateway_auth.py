"""Authentication and authorisation: tokens (HS256 dev, RS256 via PEM), API keys, roles, tenants."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sightline_common.errors import Forbidden, Unauthorised
from sightline_gateway.core.auth import TokenVerifier, mint_dev_token

from tests.unit.gateway.gateway_fixtures import SECRET, harness, settings, token

ISS, AUD = "sightline-dev", "sightline"


def verifier(**kw) -> TokenVerifier:
    return TokenVerifier(issuer=ISS, audience=AUD, hs256_secret=SECRET, **kw)


def test_dev_token_round_trip() -> None:
    who = verifier().verify(mint_dev_token(SECRET, ISS, AUD, "h1", ["clinician", "bogus"], 60))
    assert who.tenant == "h1" and who.roles == {"clinician"} and who.method == "jwt"


@pytest.mark.parametrize(
    ("claims", "key", "message"),
    [
        ({"iss": "other"}, SECRET, "invalid token"),
        ({"aud": "other"}, SECRET, "invalid token"),
        ({"exp": int(time.time()) - 3600}, SECRET, "expired"),
        ({}, "wrong-secret-" + "y" * 30, "signature"),
        ({"tenant": "../etc"}, SECRET, "tenant"),
        ({"roles": []}, SECRET, "role"),
    ],
)
def test_bad_tokens_are_refused(claims: dict, key: str, message: str) -> None:
    now = int(time.time())
    body = {
        "iss": ISS,
        "aud": AUD,
        "sub": "u",
        "exp": now + 60,
        "tenant": "h1",
        "roles": ["clinician"],
        **claims,
    }
    with pytest.raises((Unauthorised, Forbidden), match=message):
        verifier().verify(jwt.encode(body, key, algorithm="HS256"))


def test_rs256_with_pem_public_key_and_no_hs256_downgrade(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    v = verifier(public_keys=[pem])
    body = {
        "iss": ISS,
        "aud": AUD,
        "sub": "u",
        "exp": int(time.time()) + 60,
        "tenant": "h1",
        "roles": ["auditor"],
    }
    assert v.verify(jwt.encode(body, private, algorithm="RS256")).roles == {"auditor"}
    with pytest.raises(Unauthorised, match="algorithm"):
        v.verify(jwt.encode(body, SECRET, algorithm="HS256"))


def test_production_refuses_development_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"SQLite|JWT_SECRET|HS256"):
        settings(tmp_path, environment="production", jwt_secret="changeme")
    with pytest.raises(ValueError, match="HS256"):
        settings(tmp_path, environment="production", database_url="postgresql+asyncpg://db/x")


def test_routes_need_authentication_and_roles(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        r = h.client.get("/v1/models")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert h.client.get("/v1/audit", headers=token(roles=("submitter",))).status_code == 403
        assert h.client.get("/v1/audit", headers=token(roles=("auditor",))).status_code == 200
        r = h.submit(headers=token(roles=("auditor",)))
        assert r.status_code == 403


def test_api_keys_are_stored_hashed_and_scoped_to_the_tenant(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        r = h.client.post(
            "/v1/api-clients",
            json={"name": "pacs bridge", "roles": ["submitter"]},
            headers=token(roles=("admin",)),
        )
        assert r.status_code == 201, r.text
        key = r.json()["api_key"]
        assert key.encode() not in (tmp_path / "gw.db").read_bytes()
        r = h.submit(headers={"Authorization": "", "X-API-Key": key}, mode="sync")
        assert r.status_code == 200, r.text
        study = r.headers["Location"]
        assert h.client.get(study, headers={"X-API-Key": key}).status_code == 200
        assert h.client.get(study, headers=token(tenant="other")).status_code == 404
        assert h.client.get("/v1/models", headers={"X-API-Key": key[:-2] + "xx"}).status_code == 401
        assert h.client.get("/v1/models", headers={"X-API-Key": "nonsense"}).status_code == 401
        assert (
            h.client.post(
                "/v1/api-clients", json={"name": "x", "roles": ["admin"]}, headers={"X-API-Key": key}
            ).status_code
            == 403
        )
