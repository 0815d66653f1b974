"""Settings of the preprocess service (env prefix ``SIGHTLINE_PREPROCESS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sightline_common.settings import ServiceSettings


class PreprocessSettings(ServiceSettings):
    """KServe transformer in front of Triton."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_PREPROCESS_", extra="forbid")

    port: int = Field(default=8080, ge=1, le=65535, description="HTTP (v2 REST, health, metrics)")
    grpc_port: int = Field(default=8081, ge=1, le=65535, description="Open Inference Protocol v2 gRPC")
    triton_grpc: str = Field(description="Triton gRPC host:port (the predictor host)")
    model_repository: Path = Field(description="model repository holding <model>/manifest.json")
    models: list[str] = Field(
        default_factory=list,
        description="models to serve, each a KServe model named after its manifest and Triton model; "
        "empty: every model with a manifest in the repository",
    )
    triton_timeout_s: float = Field(default=30.0, gt=0)
    max_dicom_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
