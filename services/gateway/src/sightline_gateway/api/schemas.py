"""Public request and response bodies (the OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sightline_gateway.core.auth import Role


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StudyOut(_Body):
    id: str
    status: Literal["queued", "running", "completed", "failed"]
    created_at: datetime
    updated_at: datetime
    instances: int
    explain: bool
    stage_timings_ms: dict[str, float]
    deid: dict[str, Any] = Field(
        description="what de-identification did: counts per action and the recipe; `reidentification`: "
        "k of the study's quasi-identifier class when stored, the threshold, whether it was stored "
        "generalised (figures only, never values)"
    )
    error: dict[str, str] | None = None
    result_url: str | None = None
    trace_id: str | None = None
    images_purged: bool = False
    models: list[str] = Field(
        default_factory=list,
        description="the models routing sent the study to (empty: stored before routing existed)",
    )


class ReviewIn(_Body):
    verdict: Literal["agree", "disagree", "uncertain"]
    comment: str = Field(default="", max_length=4000)
    corrected_label: str | None = Field(
        default=None,
        max_length=64,
        description="the label the clinician would give instead: one of the model's labels",
    )


class ReviewOut(_Body):
    id: str
    study_id: str
    verdict: str
    corrected_label: str | None = None
    reviewer: str
    created_at: datetime
    result_status: str


class AuditEventOut(_Body):
    seq: int
    id: str
    at: datetime
    tenant_id: str | None
    actor: str
    roles: list[str]
    action: str
    resource_type: str
    resource_id: str | None
    outcome: str
    trace_id: str | None
    prev_hash: str
    hash: str


class AuditPage(_Body):
    events: list[AuditEventOut]
    next_after_seq: int | None


class ChainOut(_Body):
    ok: bool
    events: int
    head: str = Field(description="hash of the last event; anchor it elsewhere to detect truncation")
    problems: list[dict[str, Any]]


class ApiClientIn(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    roles: list[Role] = Field(min_length=1)


class ApiClientOut(_Body):
    client_id: str
    tenant: str
    roles: list[str]
    api_key: str = Field(description="shown once; only its hash is stored")


class ModelSummary(_Body):
    name: str
    version: int
    placeholder: bool
    labels: list[str]
    threshold: float
    intended_use: str
    served: bool = Field(default=False, description="the gateway routes studies to it")
    enabled: bool = Field(
        default=False, description="served and enabled for the caller's tenant: its studies may reach it"
    )


class ModelDetail(_Body):
    manifest: dict[str, Any]
    model_card: str | None


class KCount(_Body):
    k: int = Field(description="studies that someone knowing a patient's quasi-identifiers cannot rule out")
    studies: int


class RiskReportOut(_Body):
    """Re-identification risk of your tenant's de-identified studies: figures only, never values."""

    tenant: str
    k_threshold: int = Field(description="the k studies are held to (gateway setting)")
    studies: int = Field(description="de-identified studies measured")
    generalised: int = Field(description="of those, stored generalised (age bands, device model)")
    below_k: int = Field(description="studies whose k is below k_threshold")
    share_below_k: float
    distribution: list[KCount] = Field(description="studies per k, smallest k first")
    quasi_identifiers: list[str]


class PromotionIn(_Body):
    version: int = Field(ge=1, description="the candidate version to serve")


class RollbackIn(_Body):
    version: int | None = Field(
        default=None, ge=1, description="the version expected to serve again (the previous one); optional"
    )


class GateOut(_Body):
    gate: str
    passed: bool
    reason: str


class ModelDecisionOut(_Body):
    """A promotion's or rollback's decision as recorded (its audit event carries ``digest``)."""

    model: str
    action: str
    from_version: int
    to_version: int
    allowed: bool = Field(description="every gate passed")
    applied: bool = Field(description="the serving version changed (a rollback applies even when gates fail)")
    gates: list[GateOut]
    serving_report_sha256: str
    candidate_report_sha256: str
    actor: str
    digest: str = Field(description="sha256 of the decision record, named by its audit event")


class ModelVersionsOut(_Body):
    """Which version of a model serves, the one before it, and the latest decisions."""

    model: str
    manifest_version: int = Field(description="the version the model's manifest.json names")
    serving_version: int = Field(description="the last promotion's version, else the manifest's")
    previous_version: int | None = Field(description="what a rollback returns to; None: nothing")
    decisions: list[ModelDecisionOut] = Field(description="the most recent first (at most 20)")
