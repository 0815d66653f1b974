"""Settings of the gateway (env prefix ``SIGHTLINE_GATEWAY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from sightline_common.settings import ObjectStorageSettings, ServiceSettings, refuse_weak_secret


class PacsDestination(BaseModel):
    """A tenant's PACS, where its results are filed back: DICOMweb STOW-RS or DIMSE C-STORE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", description="shown in delivery status"
    )
    stow_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="STOW-RS endpoint (the DICOMweb studies resource, e.g. https://pacs/dicom-web/studies)",
    )
    authorization_file: Path | None = Field(
        default=None, description="file holding the STOW-RS Authorization header value (read per delivery)"
    )
    host: str | None = Field(default=None, description="C-STORE SCP host")
    port: int | None = Field(default=None, ge=1, le=65535, description="C-STORE SCP port")
    called_ae_title: str | None = Field(
        default=None, min_length=1, max_length=16, description="the PACS's AE"
    )
    calling_ae_title: str = Field(default="SIGHTLINE", min_length=1, max_length=16)
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_kind(self) -> PacsDestination:
        dimse = (self.host, self.port, self.called_ae_title)
        if self.stow_url is not None and any(v is not None for v in dimse):
            raise ValueError("a destination is STOW-RS (stow_url) or C-STORE (host, port, called_ae_title)")
        if self.stow_url is None and any(v is None for v in dimse):
            raise ValueError("a C-STORE destination needs host, port and called_ae_title (or set stow_url)")
        return self

    @property
    def kind(self) -> str:
        return "stow-rs" if self.stow_url is not None else "c-store"


class VersionAssignment(BaseModel):
    """Which versions of one model a tenant's studies get (``model_versions``)."""

    model_config = ConfigDict(extra="forbid")

    serving: int | None = Field(
        default=None, ge=1, description="pinned serving version; None: the promoted one (or the manifest's)"
    )
    candidate: int | None = Field(default=None, ge=1, description="the version under trial, if any")
    shadow: bool = Field(
        default=False, description="the candidate also scores every study silently (never in results)"
    )
    canary_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of studies whose result comes from the candidate"
    )

    @model_validator(mode="after")
    def _candidate(self) -> VersionAssignment:
        if (self.shadow or self.canary_share > 0) and self.candidate is None:
            raise ValueError("shadow and canary_share need a candidate version")
        if self.candidate is not None and self.candidate == self.serving:
            raise ValueError("the candidate version is the serving version")
        return self


class LifecycleGates(BaseModel):
    """The bounds a candidate must meet to be promoted (``core.promotion.GateTargets``)."""

    model_config = ConfigDict(extra="forbid")

    ece_max: float = Field(default=0.05, gt=0, le=1)
    out_of_scope_tolerance: float = Field(default=0.02, ge=0, le=1)
    shadow_disagreement_max: float = Field(default=0.05, ge=0, le=1)
    shadow_min_studies: int = Field(default=100, ge=0)
    shadow_window_days: float = Field(default=14.0, gt=0, description="what counts as recent traffic")


class GatewaySettings(ServiceSettings, ObjectStorageSettings):
    """The public REST API: where it listens, what it talks to, its secrets and limits."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_GATEWAY_", extra="forbid")

    port: int = Field(default=8080, ge=1, le=65535)
    database_url: str = Field(
        description="SQLAlchemy async URL (sqlite+aiosqlite:/// or postgresql+asyncpg://)"
    )
    migrate_on_start: bool = Field(
        default=True,
        description="run the database migrations at start (under an advisory lock); false when the "
        "chart's migration hook Job runs them: the gateway then only checks the schema is at its head",
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema for every table (tests use one per run); None: the default",
    )
    deid_url: str = Field(description="base URL of the de-identification service")
    preprocess_grpc: str = Field(description="host:port of the preprocess service's v2 gRPC")
    preprocess_http: str = Field(description="base URL of the preprocess service's HTTP (health)")
    explain_url: str = Field(description="base URL of the explanation service")
    model_repository: Path = Field(default=Path("model_repository"), description="manifests and model cards")
    models: list[str] = Field(
        default_factory=lambda: ["derm-cnn"],
        min_length=1,
        description="models served (directory names under model_repository/), in routing priority: "
        "a study several accept goes to the first of them",
    )
    models_enabled: dict[str, list[str]] = Field(
        default_factory=dict,
        description='tenant -> the served models enabled for it ("*": every tenant without its own '
        "entry); a tenant in neither has every served model",
    )

    model_versions: dict[str, dict[str, VersionAssignment]] = Field(
        default_factory=dict,
        description='tenant ("*": every tenant without its own entry) -> model -> serving version, '
        "candidate, shadow and canary share; a model in neither serves its promoted version alone",
    )
    lifecycle_gates: LifecycleGates = Field(default_factory=LifecycleGates)
    lifecycle_admin_tenant: str | None = Field(
        default=None,
        description="the tenant whose admins may promote and roll back models (None: any tenant's admin)",
    )
    version_assignment_key: str = Field(
        default="sightline-canary",
        description="key of the hash that assigns a study to the canary (changing it reshuffles studies)",
    )

    # object storage (ObjectStorageSettings): a local directory is the embedded default
    storage_dir: Path | None = Path("var/objects")

    # authentication
    jwt_secret: str = Field(description="HS256 key for development tokens and signed object URLs")
    jwt_issuer: str = "sightline-dev"
    jwt_audience: str = "sightline"
    jwks_url: str | None = Field(default=None, description="JWKS of the OIDC provider (RS256)")
    jwt_public_keys: list[Path] = Field(default_factory=list, description="PEM public keys (RS256)")
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)

    # review workstation (/review): OIDC Authorization Code + PKCE against jwt_issuer
    review_oidc_client_id: str | None = Field(default=None, description="OIDC client id of /review")
    review_oidc_client_secret: str | None = Field(
        default=None, description="OIDC client secret (None: a public client, PKCE only)"
    )
    review_session_ttl_s: int = Field(default=8 * 3600, ge=300, le=24 * 3600)

    # limits
    drift_observations_file: Path | None = Field(
        default=None,
        description="JSON-lines file of per-study image statistics and scores (no patient data) for "
        "`sightline drift report`",
    )
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_instances_per_study: int = Field(default=16, ge=1, le=1000)
    rate_limit_per_minute: int = Field(default=600, ge=1, description="requests per client per minute")
    rate_limit_burst: int = Field(default=60, ge=1)
    rate_limit_storage: str | None = Field(
        default=None,
        pattern=r"^(redis|rediss|redis\+unix)://",
        description="Redis URI shared by every replica for the rate limit (None: per-process memory)",
    )
    sync_timeout_s: float = Field(default=60.0, gt=0, le=600, description="bound of ?mode=sync")

    # jobs
    worker_concurrency: int = Field(default=4, ge=0, le=256, description="0 runs no worker in this process")
    sync_direct_jobs: int = Field(
        default=8,
        ge=0,
        le=256,
        description="sync studies whose job runs in the receiving process at once, leased in the "
        "commit that stores it, instead of through the queue (0: all queued; none without workers)",
    )
    job_retry_budget_s: float = Field(
        default=900.0,
        ge=0,
        description="how long a study's job retries while a dependency is unavailable before it fails",
    )
    job_backoff_s: float = Field(
        default=1.0, gt=0, description="first retry delay (jittered); doubles per attempt"
    )
    job_backoff_max_s: float = Field(default=30.0, gt=0, description="cap of the jittered retry delay")
    dependency_probe_s: float = Field(
        default=2.0, gt=0, description="how often preprocess and explain readiness is probed"
    )
    shutdown_grace_s: float = Field(
        default=20.0,
        ge=0,
        description="on SIGTERM, how long jobs in hand may run before their leases are handed back",
    )
    job_lease_s: float = Field(default=120.0, gt=1)
    job_poll_s: float = Field(default=0.5, gt=0)
    deid_timeout_s: float = Field(default=30.0, gt=0)
    deid_retry_budget_s: float = Field(
        default=20.0,
        ge=0,
        description="how long a submission retries de-identification while deid is unavailable "
        "(in the request: identified bytes are never queued) before answering 503 with Retry-After; "
        "below sync_timeout_s",
    )
    preprocess_timeout_s: float = Field(default=30.0, gt=0)
    explain_timeout_s: float = Field(default=60.0, gt=0)

    audit_anchor_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="how often the audit chain's head is anchored in the object store (and logged); "
        "deleting events older than the last anchor is detected by /v1/audit/verify",
    )

    # results and retention
    signed_url_ttl_s: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    retention_days: float = Field(default=30.0, gt=0, description="de-identified images and heatmaps")
    retention_interval_s: float = Field(default=3600.0, gt=0)

    # post-market monitoring (real-world performance from confirmed outcomes)
    outcome_window_days: float = Field(
        default=90.0, gt=0, description="rolling window of the real-world performance gauges"
    )
    outcome_expected_days: float = Field(
        default=42.0, gt=0, description="a referred result without an outcome after this long is backlog"
    )
    outcome_metrics_interval_s: float = Field(default=60.0, gt=0, description="gauge refresh period")

    # re-identification risk (k-anonymity of the quasi-identifiers de-identified studies keep)
    reidentification_k: int = Field(
        default=5,
        ge=2,
        le=1000,
        description="k of k-anonymity: a study whose class of quasi-identifiers (age, sex, device, body "
        "part, shifted year) is smaller is counted at risk, and stored generalised where the deid "
        "recipe allows it",
    )
    reidentification_metrics_interval_s: float = Field(
        default=60.0, gt=0, description="refresh period of the share-below-k gauges"
    )

    # the way back: results re-identified and filed in each tenant's PACS
    pacs_destinations: dict[str, PacsDestination] = Field(
        default_factory=dict,
        description="tenant -> its PACS; a tenant with one has its studies' original identifiers kept "
        "(sealed under its key in reidentification_keys_file) and its results forwarded there",
    )
    reidentification_keys_file: Path | None = Field(
        default=None,
        description='JSON {"tenant": "<base64 32-byte key>" | [current, older...]}: the tenant keys that '
        "wrap re-identification records (a Secret in the chart); needed for every tenant with a PACS",
    )
    delivery_retry_budget_s: float = Field(
        default=24 * 3600.0, ge=0, description="how long a result's delivery is retried before it is failed"
    )
    delivery_backoff_s: float = Field(default=5.0, gt=0, description="first delivery retry delay; doubles")
    delivery_backoff_max_s: float = Field(default=600.0, gt=0, description="cap of the delivery retry delay")
    delivery_lease_s: float = Field(default=120.0, gt=1)
    delivery_concurrency: int = Field(default=1, ge=0, le=64, description="0 forwards nothing from here")

    @field_validator("lifecycle_admin_tenant", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _models(self) -> GatewaySettings:
        if len(set(self.models)) != len(self.models):
            raise ValueError("models lists a model twice")
        for tenant, names in self.models_enabled.items():
            unknown = sorted(set(names) - set(self.models))
            if unknown:
                raise ValueError(f"models_enabled[{tenant!r}] names models not served: {unknown}")
        for tenant, by_model in self.model_versions.items():
            unknown = sorted(set(by_model) - set(self.models))
            if unknown:
                raise ValueError(f"model_versions[{tenant!r}] names models not served: {unknown}")
        return self

    @model_validator(mode="after")
    def _secrets(self) -> GatewaySettings:
        if self.deid_retry_budget_s >= self.sync_timeout_s:
            raise ValueError(
                "deid_retry_budget_s must be below sync_timeout_s (a sync caller waits for both)"
            )
        if self.pacs_destinations and self.reidentification_keys_file is None:
            raise ValueError("pacs_destinations need reidentification_keys_file (the tenant keys)")
        refuse_weak_secret(self.jwt_secret, "SIGHTLINE_GATEWAY_JWT_SECRET", self.environment)
        if self.environment == "production" and self.database_url.startswith("sqlite"):
            raise ValueError("SQLite is the embedded development default; use PostgreSQL in production")
        if self.environment == "production" and not (self.jwks_url or self.jwt_public_keys):
            raise ValueError(
                "HS256 development tokens are refused in production; set jwks_url or jwt_public_keys"
            )
        return self
