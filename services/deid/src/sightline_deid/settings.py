"""Settings of the de-identification service (env prefix ``SIGHTLINE_DEID_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from sightline_common.settings import ServiceSettings, refuse_weak_secret

DEVELOPMENT_KEY = "sightline-dev-secret"


class DeidSettings(ServiceSettings):
    """Where to listen, which recipe to apply, the pseudonym secret and the input limits.

    ``recipe`` has no default on purpose: de-identification rules are a decision someone must
    make explicitly, so the service refuses to start without one.
    """

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_DEID_", extra="forbid")

    port: int = Field(default=8020, ge=1, le=65535)
    recipe: str = Field(min_length=1, description="shipped recipe name or path to a recipe YAML file")
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_KEY),
        description="HMAC secret for UIDs, identifiers and date shifts (per-tenant keys derive from it)",
    )
    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_inflated_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_decoded_pixel_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_compression_ratio: float = Field(default=2000.0, gt=1)
    max_sequence_depth: int = Field(default=16, gt=0, le=64)
    ocr_max_frames: int = Field(
        default=64, gt=0, le=4096,
        description="frames of one object the burned-in text check reads; more is refused (413)",
    )
    ocr_timeout_s: float = Field(
        default=20.0, gt=0, le=600,
        description="time one OCR run on one frame may take; beyond it the object is refused (422)",
    )

    @model_validator(mode="after")
    def _strong_key_outside_development(self) -> DeidSettings:
        refuse_weak_secret(self.pseudonym_key.get_secret_value(), "pseudonym_key", self.environment)
        return self
