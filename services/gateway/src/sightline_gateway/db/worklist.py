"""The review worklist: one tenant's studies with their result state, filtered and paginated."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.db.models import Result, Review, Study

State = Literal["pending", "preliminary", "reviewed", "failed"]
STATES: tuple[State, ...] = ("preliminary", "reviewed", "failed", "pending")


@dataclass(frozen=True)
class WorklistQuery:
    """Filters of the worklist; ``None`` means any."""

    state: State | None = None
    referred: bool | None = None
    model_version: int | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None
    page: int = 1
    size: int = 25


@dataclass(frozen=True)
class WorklistRow:
    study_id: str
    created_at: datetime
    state: str
    probability: float | None
    refer: bool | None
    model_version: int | None
    reviews: int


@dataclass(frozen=True)
class Worklist:
    rows: list[WorklistRow]
    total: int
    counts: dict[str, int]
    versions: list[int]
    query: WorklistQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.size))


#: A study's row shows its first routed model's result (a study routed to several models has one
#: result per model; the study page shows them all) ...
FIRST_RESULT = and_(Result.study_id == Study.id, Result.position == 0)
#: ... but it counts as referred when any of its models refers it: a referral by a second model
#: must not sink the study to the bottom of the list.
REFERRED = (
    select(Result.study_id, func.max(case((Result.refer.is_(True), 1), else_=0)).label("any"))
    .group_by(Result.study_id)
    .subquery("referred")
)


def _state() -> ColumnElement[Any]:
    return case(
        (Study.status == "failed", "failed"),
        (Result.id.is_(None), "pending"),
        (Result.status == "final", "reviewed"),
        else_="preliminary",
    )


async def worklist(sessions: async_sessionmaker[AsyncSession], tenant: str, q: WorklistQuery) -> Worklist:
    """Referred results first, then oldest first: what most needs a clinician comes to the top."""
    state = _state().label("state")
    reviews = (
        select(Review.study_id, func.count().label("n")).group_by(Review.study_id).subquery("review_counts")
    )
    base = (
        select(Study, Result, state, func.coalesce(reviews.c.n, 0), REFERRED.c.any)
        .outerjoin(Result, FIRST_RESULT)
        .outerjoin(REFERRED, REFERRED.c.study_id == Study.id)
        .outerjoin(reviews, reviews.c.study_id == Study.id)
        .where(Study.tenant_id == tenant)
    )
    filters: list[ColumnElement[bool]] = []
    if q.state is not None:
        filters.append(_state() == q.state)
    if q.referred is not None:
        filters.append(REFERRED.c.any == (1 if q.referred else 0))
    if q.model_version is not None:
        filters.append(Result.model_version == q.model_version)
    if q.received_after is not None:
        filters.append(Study.created_at >= q.received_after)
    if q.received_before is not None:
        filters.append(Study.created_at < q.received_before)
    where = and_(*filters) if filters else None
    listed = base.where(where) if where is not None else base
    order = case((REFERRED.c.any == 1, 0), (REFERRED.c.any == 0, 1), else_=2)
    async with sessions() as session:
        page = (
            await session.execute(
                listed.order_by(order, Study.created_at, Study.id).limit(q.size).offset((q.page - 1) * q.size)
            )
        ).all()
        count_q = (
            select(func.count())
            .select_from(Study)
            .outerjoin(Result, FIRST_RESULT)
            .outerjoin(REFERRED, REFERRED.c.study_id == Study.id)
        )
        count_q = count_q.where(Study.tenant_id == tenant)
        total = await session.scalar(count_q.where(where) if where is not None else count_q) or 0
        by_state = (
            await session.execute(
                select(_state(), func.count())
                .select_from(Study)
                .outerjoin(Result, FIRST_RESULT)
                .where(Study.tenant_id == tenant)
                .group_by(_state())
            )
        ).all()
        versions = (
            await session.scalars(
                select(Result.model_version)
                .where(Result.tenant_id == tenant)
                .distinct()
                .order_by(Result.model_version)
            )
        ).all()
    rows = [
        WorklistRow(
            study_id=study.id,
            created_at=study.created_at,
            state=row_state,
            probability=result.probability if result else None,
            refer=bool(referred) if result else None,
            model_version=result.model_version if result else None,
            reviews=int(n),
        )
        for study, result, row_state, n, referred in page
    ]
    counts = {s: 0 for s in STATES} | {str(s): int(n) for s, n in by_state}
    return Worklist(rows=rows, total=int(total), counts=counts, versions=list(versions), query=q)
