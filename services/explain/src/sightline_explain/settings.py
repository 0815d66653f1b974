"""Settings of the explanation service (env prefix ``SIGHTLINE_EXPLAIN_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sightline_common.settings import ObjectStorageSettings, ServiceSettings


class ExplainSettings(ServiceSettings, ObjectStorageSettings):
    """Ray Serve application serving Grad-CAM for the model versions Triton serves."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_EXPLAIN_", extra="forbid")

    port: int = Field(default=8030, ge=1, le=65535)
    model_repository: Path = Field(description="model repository holding <model>/manifest.json and model.pt")
    models: list[str] = Field(
        default_factory=list,
        description="models to explain (each loaded once, sha256-checked); empty: every model with a "
        "manifest in the repository",
    )
    method: Literal["grad-cam", "grad-cam++"] = "grad-cam"

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
