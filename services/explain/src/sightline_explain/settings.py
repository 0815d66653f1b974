"""Settings of the explanation service (env prefix ``SIGHTLINE_EXPLAIN_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict
from sightline_common.settings import ServiceSettings
from sightline_common.storage import ObjectStore, store_from_settings


class ExplainSettings(ServiceSettings):
    """Ray Serve application serving Grad-CAM for the model version Triton serves."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_EXPLAIN_", extra="forbid")

    port: int = Field(default=8030, ge=1, le=65535)
    model_repository: Path = Field(description="model repository holding <model>/manifest.json and model.pt")
    model_name: str = "derm-cnn"
    method: Literal["grad-cam", "grad-cam++"] = "grad-cam"

    # Object storage: the S3 API when an endpoint is set, else a local directory.
    storage_dir: Path | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "sightline"
    s3_secure: bool = True
    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="limit on a DICOM body")

    # Ray Serve deployment options.
    replicas: int = Field(default=1, ge=1)
    num_cpus_per_replica: float = Field(default=1.0, gt=0)
    num_gpus_per_replica: float = Field(default=0.0, ge=0)
    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0, le=5)
    max_ongoing_requests: int = Field(default=32, ge=1)
    torch_threads: int = Field(default=1, ge=1)

    # The Ray instance that ``python -m sightline_explain`` starts (not used under a RayService).
    ray_num_cpus: int = Field(default=2, ge=1)
    ray_object_store_mb: int = Field(default=128, ge=75)
    ray_temp_dir: Path | None = None

    @model_validator(mode="after")
    def _storage_is_configured(self) -> ExplainSettings:
        if self.s3_endpoint is None and self.storage_dir is None:
            raise ValueError("set SIGHTLINE_EXPLAIN_STORAGE_DIR or SIGHTLINE_EXPLAIN_S3_ENDPOINT")
        if self.s3_endpoint is not None and not (self.s3_access_key and self.s3_secret_key):
            raise ValueError("SIGHTLINE_EXPLAIN_S3_ENDPOINT needs _S3_ACCESS_KEY and _S3_SECRET_KEY")
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
