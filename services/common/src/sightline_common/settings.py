"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix
(``SIGHTLINE_<SERVICE>_``). Settings objects are built in ``__main__`` and passed in,
never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


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
