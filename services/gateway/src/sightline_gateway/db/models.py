"""Tables: tenants, API clients, studies, jobs, results, reviews and the audit chain.

No column holds an identifying value from a study: only opaque ids, de-identified UIDs,
counts and model outputs. Review comments are clinical free text kept in the database only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiClient(Base):
    """A machine client; the key is shown once and only its SHA-256 is kept."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64))
    roles: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key_hash", name="uq_studies_idempotency"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    submitted_by: Mapped[str] = mapped_column(String(200))
    idempotency_key_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    #: SHA-256 of the submitted content and options: a reused Idempotency-Key must match it.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    explain: Mapped[bool] = mapped_column(Boolean, default=True)
    instance_keys: Mapped[list[Any]] = mapped_column(default=list)
    #: The models routing sent the study to (None: stored before routing, the default model).
    models: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    deid_study_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    deid_summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage_timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_detail: Mapped[str | None] = mapped_column(String(500), default=None)
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    """A durable unit of work for one study; claimed under a lease so only one worker runs it."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(16), default="preprocess")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Result(Base):
    """One model's output for a study: one per (study, model), preliminary until reviewed.

    ``position`` is the model's place in the study's routing order (``Study.models``): the result
    at 0 is the study's first, the one its single-model fields and the worklist describe.
    """

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("study_id", "model_name", name="uq_results_study_model"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    model_version: Mapped[int] = mapped_column(Integer)
    model_sha256: Mapped[str] = mapped_column(String(64))
    placeholder: Mapped[bool] = mapped_column(Boolean)
    probability: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    refer: Mapped[bool] = mapped_column(Boolean)
    instances: Mapped[list[Any]] = mapped_column(default=list)
    explanation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    status: Mapped[str] = mapped_column(String(16), default="preliminary")
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finalised_at: Mapped[datetime | None] = mapped_column(default=None)


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    reviewer: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    corrected_label: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only, hash-chained: ``hash`` = sha256(canonical content incl. ``seq`` and ``prev_hash``)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    at: Mapped[datetime] = mapped_column(index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[Any]] = mapped_column(default=list)
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(200), default=None)
    outcome: Mapped[str] = mapped_column(String(16))
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Outcome(Base):
    """A confirmed diagnosis for a study's lesion; a later one supersedes it, both are kept.

    Holds a code from the shipped table and its model label, never free text; ``sex`` and
    ``age_band`` are the subgroup read from the de-identified image when the outcome arrived.
    """

    __tablename__ = "outcomes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[int] = mapped_column(Integer)
    code_system: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(20))
    label: Mapped[str] = mapped_column(String(32))
    positive: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(String(32))
    diagnosed_on: Mapped[date] = mapped_column(Date)
    site: Mapped[str] = mapped_column(String(64), default="unspecified")
    sex: Mapped[str] = mapped_column(String(8), default="unknown")
    age_band: Mapped[str] = mapped_column(String(8), default="unknown")
    source: Mapped[str] = mapped_column(String(8))
    reported_by: Mapped[str] = mapped_column(String(200))
    supersedes: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class StudyRiskClass(Base):
    """A study's re-identification risk class: keyed hashes of its quasi-identifiers, never values.

    ``exact_class`` and ``general_class`` are deid's HMACs (under the tenant's key, which the
    gateway does not hold) of the study's age, sex, device, body part and shifted year, exactly
    and generalised; ``generalised`` says which of the two the stored images show. Equal keys
    within a tenant mean equal values, which is all k-anonymity needs (``core.risk``).
    """

    __tablename__ = "study_risk_classes"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    exact_class: Mapped[str] = mapped_column(String(32))
    general_class: Mapped[str] = mapped_column(String(32))
    generalised: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_study_risk_classes_exact", "tenant_id", "exact_class"),
        Index("ix_study_risk_classes_general", "tenant_id", "general_class"),
    )


class ReidentificationRecord(Base):
    """A study's original identifiers, sealed under its tenant's key (``core.envelope``).

    The only place identified values are kept, and only as ciphertext: ``wrapped_key`` is the
    record's data key sealed under the tenant key ``key_id``; ``ciphertext`` the identifiers
    sealed under the data key. Read by the result forwarder alone; deleted with the study's
    retention.
    """

    __tablename__ = "reidentification_records"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """A study's result on its way to the tenant's PACS: durable, retried under a lease like a job.

    ``destination`` is the configured destination's name; ``last_error`` a status code or error
    class, never a value from the study.
    """

    __tablename__ = "deliveries"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class ModelServing(Base):
    """Which version of a model serves, as the last allowed promotion or rollback left it.

    A model without a row serves the version its manifest names (``model_repository/<name>``).
    """

    __tablename__ = "model_serving"

    model_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    serving_version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class ModelDecision(Base):
    """A promotion or rollback asked for, allowed or refused: every gate's verdict, both reports'
    sha256 and the actor (``record``); its audit event carries ``digest``, the record's sha256."""

    __tablename__ = "model_decisions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(16))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    applied: Mapped[bool] = mapped_column(Boolean)  # the serving version changed
    actor: Mapped[str] = mapped_column(String(200))
    record: Mapped[dict[str, Any]] = mapped_column(default=dict)
    digest: Mapped[str] = mapped_column(String(64))


class ShadowScore(Base):
    """A candidate version's silent score of a study beside the serving version's.

    Never read by results, FHIR, DICOM SR, review or the worklist: only by the shadow metrics
    and the promotion gate's disagreement figure.
    """

    __tablename__ = "shadow_scores"
    __table_args__ = (
        UniqueConstraint("study_id", "model_name", "candidate_version", name="uq_shadow_study_model_version"),
        Index("ix_shadow_model_at", "model_name", "candidate_version", "at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    study_id: Mapped[str] = mapped_column(String(36))
    model_name: Mapped[str] = mapped_column(String(100))
    serving_version: Mapped[int] = mapped_column(Integer)
    candidate_version: Mapped[int] = mapped_column(Integer)
    serving_probability: Mapped[float] = mapped_column(Float)
    candidate_probability: Mapped[float] = mapped_column(Float)
    serving_threshold: Mapped[float] = mapped_column(Float)
    candidate_threshold: Mapped[float] = mapped_column(Float)
    disagree: Mapped[bool] = mapped_column(Boolean)
