"""Settings of the DICOM receiver (env prefix ``SIGHTLINE_RECEIVER_``)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)
from sightline_common.http import is_valid_tenant
from sightline_common.settings import ServiceSettings

#: PS3.5 6.2 AE: up to 16 characters of the default repertoire, no backslash or control characters.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def valid_ae_title(value: str) -> str:
    """An AE title as DICOM compares it: leading/trailing spaces are not significant."""
    title = value.strip()
    if not title or not _AE_TITLE.match(title):
        raise ValueError("AE titles are 1-16 printable characters without backslash")
    return title


class TenantSenders(BaseModel):
    """One tenant's modalities/PACS (calling AE titles) and the credential the receiver uses for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(description="Sightline tenant the instances are filed under")
    calling_ae_titles: list[str] = Field(min_length=1, description="AE titles allowed to send")
    credential_file: Path = Field(
        description="file holding the gateway credential for this tenant: an API key (slk_...) with "
        "the submitter role, or a bearer token; re-read for every delivery, so it can be rotated"
    )

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not is_valid_tenant(value):
            raise ValueError("invalid tenant name")
        return value

    @field_validator("calling_ae_titles")
    @classmethod
    def _titles(cls, values: list[str]) -> list[str]:
        return [valid_ae_title(v) for v in values]


class ReceiverSettings(ServiceSettings):
    """Where the SCP listens, who may send, its limits, and where studies go."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_RECEIVER_", extra="forbid")

    port: int = Field(default=8040, ge=1, le=65535, description="HTTP: health and metrics")
    dicom_port: int = Field(default=11112, ge=1, le=65535, description="DICOM (DIMSE) port")
    ae_title: str = Field(default="SIGHTLINE", description="this SCP's AE title (called AE title)")
    require_called_ae_title: bool = Field(
        default=True, description="reject associations that do not address ae_title"
    )
    gateway_url: str = Field(description="base URL of the gateway (its /dicomweb/studies takes studies)")
    tenants: list[TenantSenders] = Field(min_length=1, description="AE-title allow-list per tenant")

    sop_classes: list[str] = Field(
        default_factory=lambda: [str(VLPhotographicImageStorage), str(SecondaryCaptureImageStorage)],
        min_length=1,
        description="storage SOP classes accepted (those the served models declare)",
    )
    transfer_syntaxes: list[str] = Field(
        default_factory=lambda: [
            str(ExplicitVRLittleEndian),
            str(ImplicitVRLittleEndian),
            str(JPEGBaseline8Bit),
            str(RLELossless),
        ],
        min_length=1,
        description="transfer syntaxes accepted (those preprocess decodes)",
    )

    # limits
    max_associations: int = Field(default=10, ge=1, le=1000, description="concurrent associations")
    max_pdu_bytes: int = Field(default=262_144, ge=0, description="maximum PDU length offered (0: none)")
    study_idle_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="a study is complete when no instance arrived this long"
    )
    max_instances_per_study: int = Field(default=16, ge=1, le=1000, description="as the gateway's limit")
    max_study_bytes: int = Field(default=32 * 1024 * 1024, gt=0, description="as the gateway's upload limit")
    max_pending_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0, description="identified bytes held in memory, all studies together"
    )
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=30.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)

    # delivery to the gateway
    gateway_timeout_s: float = Field(default=60.0, gt=0)
    delivery_retry_budget_s: float = Field(
        default=300.0, ge=0, description="how long a study's delivery is retried while the gateway is down"
    )

    redelivery_backoff_s: float = Field(
        default=30.0,
        gt=0,
        description="wait before retrying a study the gateway stayed unavailable for (past the retry "
        "budget); doubles with each failure, up to redelivery_backoff_max_s",
    )
    redelivery_backoff_max_s: float = Field(default=900.0, gt=0)
    shutdown_grace_s: float = Field(
        default=15.0,
        ge=0,
        description="at stop, how long pending studies are delivered; the rest stay in the spool",
    )

    # the spool: every instance is on disk, sealed, before its C-STORE is answered with success
    spool_dir: Path = Field(
        description="the durable spool (created 0700): acknowledged instances until the gateway has "
        "their study; keep it on a volume that outlives the process (one receiver per directory)"
    )
    spool_key_file: Path | None = Field(
        default=None,
        description="file holding the spool's AES-256-GCM key: 32 random bytes, base64-encoded "
        "(head -c 32 /dev/urandom | base64); losing it loses what is spooled",
    )
    spool_unencrypted: bool = Field(
        default=False,
        description="development and test only: spool in the clear when no spool_key_file is set",
    )
    spool_max_age_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="a study still undelivered this long after it was spooled is moved to the quarantine",
    )

    # optional TLS (DICOM TLS, PS3.15 B.1)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(default=None, description="when set, senders must present a client cert")

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return valid_ae_title(value)

    @model_validator(mode="after")
    def _consistent(self) -> ReceiverSettings:
        seen: dict[str, str] = {}
        for senders in self.tenants:
            for title in senders.calling_ae_titles:
                if seen.setdefault(title, senders.tenant) != senders.tenant:
                    raise ValueError("a calling AE title may belong to one tenant only")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_ca_file needs tls_cert_file and tls_key_file")
        if self.max_study_bytes > self.max_pending_bytes:
            raise ValueError("max_study_bytes cannot exceed max_pending_bytes")
        if self.redelivery_backoff_s > self.redelivery_backoff_max_s:
            raise ValueError("redelivery_backoff_s cannot exceed redelivery_backoff_max_s")
        if self.spool_key_file is None and not self.spool_unencrypted:
            raise ValueError(
                "set spool_key_file (the spool holds identified data), or spool_unencrypted in development"
            )
        if self.spool_key_file is None and not self.is_development:
            raise ValueError("spool_unencrypted is for development and test only; set spool_key_file")
        return self

    def tenant_of(self) -> dict[str, str]:
        """Calling AE title -> tenant."""
        return {title: s.tenant for s in self.tenants for title in s.calling_ae_titles}
