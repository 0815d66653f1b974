"""Who is calling: OIDC/JWT bearer tokens and hashed API keys, roles and tenants.

Pure functions and small classes; the FastAPI dependency that uses them is in ``api/deps.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from sightline_common.errors import Forbidden, Unauthorised
from sightline_common.http import is_valid_tenant


class Role(StrEnum):
    SUBMITTER = "submitter"
    CLINICIAN = "clinician"
    AUDITOR = "auditor"
    ADMIN = "admin"
    #: A hospital system (pathology/EHR interface) that reports confirmed diagnoses, and nothing else.
    OUTCOME_REPORTER = "outcome-reporter"


ALL_ROLES = frozenset(r.value for r in Role)
TENANT_CLAIM = "tenant"
ROLES_CLAIM = "roles"
API_KEY_PREFIX = "slk"
_API_KEY = re.compile(rf"^{API_KEY_PREFIX}_([a-f0-9]{{16}})_([A-Za-z0-9_-]{{32,64}})$")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: subject, tenant, roles and how they authenticated."""

    subject: str
    tenant: str
    roles: frozenset[str]
    method: str  # "jwt" or "api-key"

    @property
    def client_id(self) -> str:
        """Key for rate limiting: one bucket per subject per tenant."""
        return f"{self.tenant}/{self.subject}"

    def require(self, *roles: Role) -> None:
        """Raise :class:`Forbidden` unless the caller holds one of ``roles`` (admin holds all)."""
        if Role.ADMIN in self.roles or any(r in self.roles for r in roles):
            return
        raise Forbidden("this action needs one of the roles: " + ", ".join(sorted(r.value for r in roles)))


def valid_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not is_valid_tenant(tenant):
        raise Unauthorised("token has no valid tenant claim")
    return tenant


def valid_roles(roles: object) -> frozenset[str]:
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
        raise Unauthorised("token has no valid roles claim")
    known = frozenset(roles) & ALL_ROLES
    if not known:
        raise Forbidden("token carries no Sightline role")
    return known


def mint_dev_token(
    secret: str,
    issuer: str,
    audience: str,
    tenant: str,
    roles: Sequence[str],
    ttl_s: int,
    subject: str = "dev-user",
) -> str:
    """An HS256 development token (``sightline up`` prints one); refused by production settings."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        TENANT_CLAIM: valid_tenant(tenant),
        ROLES_CLAIM: sorted(set(roles)),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


class TokenVerifier:
    """Checks signature, issuer, audience, expiry and not-before of bearer tokens.

    RS256 against a JWKS URL or configured PEM public keys when either is set (production);
    otherwise HS256 against the shared development secret.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        hs256_secret: str | None = None,
        jwks_url: str | None = None,
        public_keys: Iterable[Path] = (),
        leeway_s: int = 30,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.hs256_secret = hs256_secret
        self.public_keys = [p.read_bytes() for p in public_keys]
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None

    @property
    def asymmetric(self) -> bool:
        return bool(self.jwks or self.public_keys)

    def _keys(self, token: str) -> list[Any]:
        if self.jwks is not None:
            try:
                return [self.jwks.get_signing_key_from_jwt(token).key]
            except jwt.PyJWKClientError as exc:
                raise Unauthorised("token signing key not found in the JWKS") from exc
        if self.public_keys:
            return list(self.public_keys)
        assert self.hs256_secret is not None
        return [self.hs256_secret]

    def verify(self, token: str) -> Principal:
        """Return the caller or raise :class:`Unauthorised` (never echoing the token)."""
        algorithms = ["RS256", "ES256", "PS256"] if self.asymmetric else ["HS256"]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorised("malformed bearer token") from exc
        if header.get("alg") not in algorithms:
            raise Unauthorised("token algorithm not accepted")
        last: Exception | None = None
        for key in self._keys(token):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
                break
            except jwt.ExpiredSignatureError as exc:
                raise Unauthorised("token expired") from exc
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.PyJWTError as exc:
                raise Unauthorised(f"invalid token ({type(exc).__name__})") from exc
        else:
            raise Unauthorised("token signature invalid") from last
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 200:
            raise Unauthorised("token has no valid subject")
        return Principal(
            subject, valid_tenant(claims.get(TENANT_CLAIM)), valid_roles(claims.get(ROLES_CLAIM)), "jwt"
        )


def new_api_key() -> tuple[str, str, str]:
    """(client id, the key shown once, the stored hash)."""
    client_id = secrets.token_hex(8)
    key = f"{API_KEY_PREFIX}_{client_id}_{secrets.token_urlsafe(32)}"
    return client_id, key, hash_api_key(key)


def hash_api_key(key: str) -> str:
    """SHA-256 suffices: keys carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_key(key: str) -> str:
    """The client id inside a well-formed key, else :class:`Unauthorised`."""
    match = _API_KEY.match(key)
    if not match:
        raise Unauthorised("malformed API key")
    return match.group(1)


def api_key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), stored_hash)
