"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix
(``SIGHTLINE_<SERVICE>_``). Settings objects are built in ``__main__`` and passed in,
never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sightline_common.storage import ObjectStore, store_from_settings

Environment = Literal["development", "test", "production"]
TraceExporter = Literal["jsonl", "otlp-grpc", "otlp-http", "console", "none"]

#: Secrets that ship in examples and development defaults; refused outside development.
KNOWN_WEAK_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "development", "dev-secret", "sightline-dev-secret"}
)


class TelemetrySettings(BaseSettings):
    """Where traces go. The JSON-lines file is the embedded default."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_OTEL_", extra="forbid")

    exporter: TraceExporter = "jsonl"
    traces_file: Path = Path("var/traces.jsonl")
    otlp_endpoint: str | None = None
    #: Parent-based head sampling: share of root traces kept; children follow their parent.
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    #: Also export spans that end in error from unsampled traces (see sightline_common.sampling).
    keep_errors: bool = True


class ServiceSettings(BaseSettings):
    """Common settings: where to listen, how to log, what environment this is."""

    model_config = SettingsConfigDict(extra="forbid")

    environment: Environment = "production"
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    log_json: bool = True
    log_level: str = "INFO"
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @property
    def is_development(self) -> bool:
        return self.environment in ("development", "test")

    @model_validator(mode="after")
    def _production_needs_otlp_or_file(self) -> ServiceSettings:
        if self.environment == "production" and self.telemetry.exporter == "none":
            raise ValueError("tracing cannot be disabled in production (accountability)")
        return self


def refuse_weak_secret(value: str, name: str, environment: Environment) -> str:
    """Return ``value`` or raise when it is a known default/short secret outside development."""
    if environment == "production" and (value in KNOWN_WEAK_SECRETS or len(value) < 32):
        raise ValueError(
            f"{name} is a development default or shorter than 32 characters; "
            "set a strong secret for production"
        )
    return value


class ObjectStorageSettings(BaseSettings):
    """Object storage: the S3 API when ``s3_endpoint`` is set, else the local ``storage_dir``.

    Mixed into the settings of each service that stores objects, so that the fields, their
    env names (``<PREFIX>STORAGE_DIR``, ``<PREFIX>S3_ENDPOINT``...) and their validation are one.
    """

    storage_dir: Path | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "sightline"
    s3_secure: bool = True

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Self:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        if self.s3_endpoint is None and self.storage_dir is None:
            raise ValueError(f"set {prefix}STORAGE_DIR or {prefix}S3_ENDPOINT")
        if self.s3_endpoint is not None and not (self.s3_access_key and self.s3_secret_key):
            raise ValueError(f"{prefix}S3_ENDPOINT needs {prefix}S3_ACCESS_KEY and {prefix}S3_SECRET_KEY")
        return self

    def object_store(self) -> ObjectStore:
        """The configured object store (S3 API when an endpoint is set, else the local directory)."""
        return store_from_settings(
            local_dir=self.storage_dir,
            s3_endpoint=self.s3_endpoint,
            s3_access_key=self.s3_access_key,
            s3_secret_key=self.s3_secret_key,
            s3_bucket=self.s3_bucket,
            s3_secure=self.s3_secure,
        )
