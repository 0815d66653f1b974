"""Model lifecycle state: the serving version per model, promotion decisions, shadow scores.

A promotion or rollback is decided by ``core.promotion``; this module stores the decision
(every gate, both reports' sha256, the actor) and, when allowed, the new serving version, in
the same transaction as its audit event, whose ``resource_id`` carries the decision record's
sha256: altering a stored decision then no longer matches the hash-chained log.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sightline_common.errors import InvalidInput, NotFound
from sqlalchemy import Integer, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.promotion import (
    Decision,
    GateTargets,
    ShadowFigure,
    decision_record,
    evaluate_gates,
    parse_report,
    record_digest,
    report_sha256,
)
from sightline_gateway.core.shadow import ShadowComparison
from sightline_gateway.core.versions import manifest_path, report_path, version_dir
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.models import ModelDecision, ModelServing, ShadowScore, utcnow

PROMOTE = "promote"
ROLLBACK = "rollback"


def _manifest(repository: Path, model: str, version: int) -> dict[str, Any] | None:
    path = manifest_path(repository, model, version)
    if path is None:
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) and data.get("version") == version else None


class Lifecycle:
    """Serving versions, decisions and shadow scores of the models in one repository."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        repository: Path,
        targets: GateTargets,
        shadow_window: timedelta,
    ) -> None:
        self.sessions, self.audit, self.repository = sessions, audit, repository
        self.targets, self.shadow_window = targets, shadow_window

    def manifest_version(self, model: str) -> int:
        path = self.repository / model / "manifest.json"
        if not path.is_file():
            raise NotFound(f"model {model} is not in the repository")
        return int(json.loads(path.read_text())["version"])

    async def serving(self, model: str) -> ModelServing | None:
        async with self.sessions() as session:
            return await session.get(ModelServing, model)

    async def serving_version(self, model: str) -> int:
        """The promoted version, else the version the model's manifest names."""
        row = await self.serving(model)
        return row.serving_version if row is not None else self.manifest_version(model)

    async def shadow_figure(self, model: str, candidate: int, serving: int) -> ShadowFigure:
        """Shadowed studies of ``candidate`` beside ``serving`` in the recent window, and disagreements."""
        since = utcnow() - self.shadow_window
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(func.count(), func.coalesce(func.sum(cast(ShadowScore.disagree, Integer)), 0))
                    .where(ShadowScore.model_name == model)
                    .where(ShadowScore.candidate_version == candidate)
                    .where(ShadowScore.serving_version == serving)
                    .where(ShadowScore.at >= since)
                )
            ).one()
        return ShadowFigure(studies=int(row[0]), disagreements=int(row[1]))

    def _report(self, model: str, version: int) -> tuple[dict[str, Any], str]:
        version_dir(self.repository, model, version)
        raw = report_path(self.repository, model, version).read_bytes()
        return parse_report(raw, model=model, version=version), report_sha256(raw)

    async def decide(
        self,
        *,
        action: str,
        model: str,
        version: int | None,
        actor: str,
        roles: list[str],
        tenant: str | None,
        trace_id: str | None,
    ) -> tuple[Decision, dict[str, Any], str]:
        """Judge and record a promotion to ``version`` (or a rollback to the previous version).

        A promotion must pass every gate; a rollback returns to the version that served before
        the last promotion: its gates are recorded (both reports' hashes, what they said) but do
        not hold it back, since the way back from a bad version must always be open.
        """
        current_row = await self.serving(model)
        current = current_row.serving_version if current_row is not None else self.manifest_version(model)
        if action == ROLLBACK:
            target = current_row.previous_version if current_row is not None else None
            if target is None:
                raise InvalidInput(f"model {model} has no earlier version to roll back to")
            if version is not None and version != target:
                raise InvalidInput(f"model {model} rolls back to version {target}, not {version}")
        else:
            if version is None:
                raise InvalidInput("a promotion names the version")
            target = version
            if target == current:
                raise InvalidInput(f"model {model} version {target} is already serving")
        serving_report, serving_sha = self._report(model, current)
        candidate_report, candidate_sha = self._report(model, target)
        shadow = await self.shadow_figure(model, target, current) if action == PROMOTE else None
        decision = evaluate_gates(
            model=model,
            from_version=current,
            to_version=target,
            serving=serving_report,
            candidate=candidate_report,
            shadow=shadow,
            targets=self.targets,
            serving_manifest=_manifest(self.repository, model, current),
            candidate_manifest=_manifest(self.repository, model, target),
            check_shadow=action == PROMOTE,
        )
        applied = decision.allowed or action == ROLLBACK
        record = decision_record(
            decision, action=action, actor=actor, serving_sha256=serving_sha, candidate_sha256=candidate_sha
        )
        record["applied"] = applied
        digest = record_digest(record)
        now = utcnow()
        async with self.audit.transaction() as session:
            session.add(
                ModelDecision(
                    id=str(uuid.uuid4()),
                    at=now,
                    model_name=model,
                    action=action,
                    from_version=current,
                    to_version=target,
                    applied=applied,
                    actor=actor,
                    record=record,
                    digest=digest,
                )
            )
            if applied:
                row = await session.get(ModelServing, model, with_for_update=True)
                if row is None:
                    session.add(
                        ModelServing(
                            model_name=model,
                            serving_version=target,
                            previous_version=current,
                            updated_at=now,
                            updated_by=actor,
                        )
                    )
                elif row.serving_version != current:
                    raise InvalidInput(f"model {model} changed version while this decision was made; retry")
                else:
                    row.previous_version = current if action == PROMOTE else None
                    row.serving_version, row.updated_at, row.updated_by = target, now, actor
            try:
                await session.flush()
            except IntegrityError as exc:  # a concurrent first promotion of the same model
                raise InvalidInput(
                    f"model {model} changed version while this decision was made; retry"
                ) from exc
            await self.audit.add(
                session,
                actor=actor,
                roles=roles,
                tenant_id=tenant,
                action=f"model.{action}",
                resource_type="model",
                resource_id=f"{model}/{current}->{target} sha256:{digest}",
                outcome="success" if applied else "refused",
                trace_id=trace_id,
            )
        return decision, record, digest

    async def record_shadow(self, c: ShadowComparison, study_id: str) -> None:
        """Store a candidate's silent score. Idempotent per (study, model, candidate version):
        a retried job does not count a study twice."""
        row = ShadowScore(
            id=str(uuid.uuid4()),
            at=utcnow(),
            tenant_id=c.tenant,
            study_id=study_id,
            model_name=c.model,
            serving_version=c.serving_version,
            candidate_version=c.candidate_version,
            serving_probability=c.serving_probability,
            candidate_probability=c.candidate_probability,
            serving_threshold=c.serving_threshold,
            candidate_threshold=c.candidate_threshold,
            disagree=c.disagree,
        )
        try:
            async with self.sessions() as session, session.begin():
                session.add(row)
        except IntegrityError:
            return  # already recorded by an earlier attempt of the same job

    async def decisions(self, model: str, limit: int = 20) -> list[ModelDecision]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(ModelDecision)
                .where(ModelDecision.model_name == model)
                .order_by(ModelDecision.at.desc())
                .limit(limit)
            )
            return list(rows.all())
