"""Settings of the gateway (env prefix ``SIGHTLINE_GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sightline_common.settings import ServiceSettings, refuse_weak_secret


class GatewaySettings(ServiceSettings):
    """The public REST API: where it listens, what it talks to, its secrets and limits."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_GATEWAY_", extra="forbid")

    port: int = Field(default=8080, ge=1, le=65535)
    database_url: str = Field(description="SQLAlchemy async URL (sqlite+aiosqlite:/// or postgresql+asyncpg://)")
    deid_url: str = Field(description="base URL of the de-identification service")
    preprocess_grpc: str = Field(description="host:port of the preprocess service's v2 gRPC")
    preprocess_http: str = Field(description="base URL of the preprocess service's HTTP (health)")
    explain_url: str = Field(description="base URL of the explanation service")
    jwt_secret: str = Field(description="HS256 key for development tokens; use jwks_url in production")
    jwt_issuer: str = "sightline-dev"
    jwt_audience: str = "sightline"
    jwks_url: str | None = None
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _secrets(self) -> GatewaySettings:
        refuse_weak_secret(self.jwt_secret, "SIGHTLINE_GATEWAY_JWT_SECRET", self.environment)
        if self.environment == "production" and self.database_url.startswith("sqlite"):
            raise ValueError("SQLite is the embedded development default; use PostgreSQL in production")
        return self
