"""Re-identification risk classes in the database: a tenant's counts, its k per study, its tenants.

A study's k is the number of the tenant's studies that someone who knows the patient's
quasi-identifiers cannot tell from it in what Sightline stored: the studies stored exactly with
the same values, plus the studies stored generalised into the same bands (see ``core.risk``).
Only studies whose de-identified images are still held count: once retention has purged a
study's images (``Study.purged_at``), its quasi-identifiers are no longer in what is stored.
Everything here is counted in SQL over keyed hashes; no value is read or returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from sightline_gateway.db.models import Study
from sightline_gateway.db.models import StudyRiskClass as R

_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class ClassCounts:
    """A class's studies already stored: all with the exact values, and those the k formula counts."""

    exact_population: int
    stored_exact: int
    stored_generalised: int


async def class_counts(session: AsyncSession, tenant: str, exact: str, general: str) -> ClassCounts:
    """Counts of the tenant's stored studies in the classes ``exact`` and ``general``."""
    in_exact, in_general = R.exact_class == exact, R.general_class == general
    row = (
        await session.execute(
            _held(
                select(
                    func.count().filter(in_exact),
                    func.count().filter(and_(in_exact, R.generalised == false())),
                    func.count().filter(and_(in_general, R.generalised == true())),
                ),
                tenant,
            ).where(or_(in_exact, in_general))
        )
    ).one()
    return ClassCounts(int(row[0]), int(row[1]), int(row[2]))


async def k_distribution(session: AsyncSession, tenant: str) -> list[tuple[int, bool, int]]:
    """(k, generalised, number of studies) for every k among the tenant's studies, smallest k first."""
    exact = (
        _held(select(R.exact_class.label("c"), func.count().label("n")), tenant)
        .where(R.generalised == false())
        .group_by(R.exact_class)
        .subquery()
    )
    general = (
        _held(select(R.general_class.label("c"), func.count().label("n")), tenant)
        .where(R.generalised == true())
        .group_by(R.general_class)
        .subquery()
    )
    per_study = (
        _held(
            select((func.coalesce(exact.c.n, 0) + func.coalesce(general.c.n, 0)).label("k"), R.generalised),
            tenant,
        )
        .outerjoin(exact, exact.c.c == R.exact_class)
        .outerjoin(general, general.c.c == R.general_class)
        .subquery()
    )
    rows = await session.execute(
        select(per_study.c.k, per_study.c.generalised, func.count())
        .group_by(per_study.c.k, per_study.c.generalised)
        .order_by(per_study.c.k, per_study.c.generalised)
    )
    return [(int(k), bool(g), int(n)) for k, g, n in rows.all()]


def _held(query: _Query, tenant: str) -> _Query:
    """``query`` over the tenant's risk rows whose study's images are still held."""
    return (
        query.select_from(R)
        .join(Study, Study.id == R.study_id)
        .where(R.tenant_id == tenant, Study.purged_at.is_(None))
    )


async def tenants(session: AsyncSession) -> Sequence[str]:
    """The tenants with at least one study's risk class."""
    return (await session.scalars(select(R.tenant_id).distinct())).all()
