"""Storing confirmed outcomes and reading results joined with them as :class:`Case` rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Row, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.core.outcomes import Confirmed
from sightline_gateway.core.performance import Case, GroupCounts, WindowSummary
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.models import Outcome, Result, Review, Study, utcnow

#: Bound of ``IN (...)`` lists per query.
CHUNK = 500


@dataclass(frozen=True)
class Reporter:
    """Who reports, for the row and the audit event."""

    subject: str
    roles: Sequence[str]
    tenant: str
    trace_id: str | None


async def record_outcome(
    audit: AuditLog,
    study: Study,
    result: Result,
    confirmed: Confirmed,
    who: Reporter,
    subgroup: dict[str, str],
) -> Outcome:
    """Store an outcome that supersedes the study's current one, with its audit event, atomically."""
    async with audit.transaction() as session:
        current = await session.scalar(
            select(Outcome.id)
            .where(Outcome.study_id == study.id)
            .order_by(Outcome.created_at.desc(), Outcome.id.desc())
            .limit(1)
        )
        row = Outcome(
            id=str(uuid.uuid4()),
            study_id=study.id,
            tenant_id=study.tenant_id,
            model_name=result.model_name,
            model_version=result.model_version,
            code_system=confirmed.code_system,
            code=confirmed.code,
            label=confirmed.label,
            positive=confirmed.positive,
            method=confirmed.method,
            diagnosed_on=confirmed.diagnosed_on,
            site=confirmed.site,
            sex=subgroup.get("sex", "unknown"),
            age_band=subgroup.get("age_band", "unknown"),
            source=confirmed.source,
            reported_by=who.subject,
            supersedes=current,
            created_at=utcnow(),
        )
        session.add(row)
        await session.flush()
        await audit.add(
            session,
            actor=who.subject,
            roles=who.roles,
            tenant_id=who.tenant,
            action="outcome.supersede" if current else "outcome.create",
            resource_type="outcome",
            resource_id=row.id,
            trace_id=who.trace_id,
        )
    return row


async def outcome_history(sessions: async_sessionmaker[AsyncSession], study_id: str) -> list[Outcome]:
    """A study's outcomes, newest (the current one) first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(Outcome)
            .where(Outcome.study_id == study_id)
            .order_by(Outcome.created_at.desc(), Outcome.id.desc())
        )
        return list(rows.all())


#: The columns a case needs, not whole results: loading the entities (their instances and
#: explanation JSON, the identity map) cost ~5.7 KB per result at the refresh's peak, so the
#: gateway's RSS grew with the window's result count (+24% over a 30-minute soak).
CASE_COLUMNS = (
    Result.study_id,
    Result.model_name,
    Result.model_version,
    Result.tenant_id,
    Result.created_at,
    Result.probability,
    Result.refer,
)
#: What a case needs of its study's current outcome.
OUTCOME_COLUMNS = (
    Outcome.study_id,
    Outcome.model_name,
    Outcome.positive,
    Outcome.site,
    Outcome.sex,
    Outcome.age_band,
)


async def load_cases(
    sessions: async_sessionmaker[AsyncSession],
    since: datetime,
    until: datetime,
    model: str | None = None,
) -> list[Case]:
    """Every result created in ``[since, until)`` with its current outcome and latest verdict."""
    async with sessions() as session:
        query = select(*CASE_COLUMNS).where(Result.created_at >= since, Result.created_at < until)
        if model is not None:
            query = query.where(Result.model_name == model)
        results = list((await session.execute(query.order_by(Result.created_at))).all())
        outcomes: dict[str, OutcomeRow] = {}
        verdicts: dict[str, str] = {}
        ids = [r.study_id for r in results]
        for n in range(0, len(ids), CHUNK):
            chunk = ids[n : n + CHUNK]
            outcomes.update(await _current_outcomes(session, Outcome.study_id.in_(chunk)))
            for study_id, verdict in await session.execute(
                select(Review.study_id, Review.verdict)
                .where(Review.study_id.in_(chunk))
                .order_by(Review.created_at)
            ):
                verdicts[study_id] = verdict
    return [_case(r, outcomes.get(r.study_id), verdicts.get(r.study_id)) for r in results]


async def load_window(
    sessions: async_sessionmaker[AsyncSession], since: datetime, until: datetime, due_before: datetime
) -> WindowSummary:
    """What the outcome gauges need from ``[since, until)``: per (model, version, tenant) the number
    of results and of referrals made before ``due_before`` (counted by the database), and as cases
    only the results with a confirmed outcome. Its cost follows the outcomes, not the results."""
    inside = (Result.created_at >= since, Result.created_at < until)
    group = (Result.model_name, Result.model_version, Result.tenant_id)
    due = func.sum(case((and_(Result.refer, Result.created_at <= due_before), 1), else_=0))
    async with sessions() as session:
        counts: dict[tuple[str, ...], GroupCounts] = {
            (str(name), str(version), str(tenant)): GroupCounts(results=n, referred_due=int(referred or 0))
            for name, version, tenant, n, referred in await session.execute(
                select(*group, func.count(), due).where(*inside).group_by(*group)
            )
        }
        studies = select(Result.study_id).where(*inside).scalar_subquery()
        outcomes = await _current_outcomes(session, Outcome.study_id.in_(studies))
        answered = select(Outcome.study_id).where(Outcome.study_id.in_(studies)).scalar_subquery()
        rows = await session.execute(select(*CASE_COLUMNS).where(*inside, Result.study_id.in_(answered)))
        cases = [_case(r, outcomes.get(r.study_id), None) for r in rows]
    confirmed = [c for c in cases if c.truth is not None]
    return WindowSummary(counts, confirmed, due_before)


async def _current_outcomes(session: AsyncSession, where: ColumnElement[bool]) -> dict[str, OutcomeRow]:
    """Each study's current outcome among those ``where`` selects: the latest supersedes the others."""
    rows = await session.execute(
        select(*OUTCOME_COLUMNS).where(where).order_by(Outcome.created_at, Outcome.id)
    )
    return {row.study_id: row for row in rows}


#: One row of :data:`OUTCOME_COLUMNS`.
OutcomeRow = Row[str, str, bool, str, str, str]
#: One row of :data:`CASE_COLUMNS`.
CaseRow = Row[str, str, int, str, datetime, float, bool]


def _case(r: CaseRow, o: OutcomeRow | None, verdict: str | None) -> Case:
    return Case(
        model=r.model_name,
        version=str(r.model_version),
        tenant=r.tenant_id,
        site=o.site if o else "unspecified",
        sex=o.sex if o else "unknown",
        age_band=o.age_band if o else "unknown",
        at=r.created_at,
        probability=r.probability,
        refer=r.refer,
        # An outcome's positive is judged against one model's labels (the study's first):
        # another model's result of the same study has no outcome rather than a wrong one.
        truth=o.positive if o is not None and o.model_name == r.model_name else None,
        verdict=verdict,
    )
