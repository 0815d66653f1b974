"""Re-identification risk, measured: k-anonymity of the quasi-identifiers a tenant's studies keep.

De-identified studies keep, by design, age, sex, the device (station, serial), the body part and
shifted dates. deid returns, with every output, the class keys of those values (HMACs under the
tenant's key, which the gateway does not hold: it can count equal keys, never see or test the
values) at two levels: exact and generalised (age in 5-year bands, 90+ one band, device as its
model). The gateway stores one row per study (``db.models.StudyRiskClass``) and measures:

k of a study
    The number of the tenant's de-identified studies that someone who knows this patient's
    quasi-identifiers cannot rule out in what Sightline stored: the studies stored exactly with
    the same values, plus those stored generalised into the same bands (a "42, station A" patient
    may be any "40-44, model M" study). That is the prosecutor's candidate set; its inverse is the
    chance of picking the right study. It is computed live over the studies whose images are still
    held (retention's purge takes a study out), so it moves as the tenant's studies come and go.
Share below k
    The share of the tenant's studies whose k is below the threshold (setting, default 5): a
    Prometheus gauge per tenant (``sightline_reidentification_share_below_k``) and the audit
    report (``GET /v1/privacy/reidentification-risk``), which also gives the distribution of k.

Generalisation. When the recipe allows it (``reidentification_risk.generalise_below_k``) and a
new study's exact class (the tenant's studies with its exact values, however stored, this one
included) is below the threshold, the study is stored generalised: the gateway asks deid again
for the generalised output, from the identified bytes still in the request. Generalising a study
does not raise its own k (someone who knows the patient's exact values sees the same candidates);
it raises the k of every other study in its bands, which is how a tenant's small classes merge.
The decision reads counts before the study commits: two concurrent studies of one new class may
both see it small (both are generalised, which errs on the side of privacy).

Residual risk: k is measured over the tenant's studies in Sightline, not over every data set a
recipient might join them with; a class stays below k until k studies share it (the first studies
of a rare combination are the exposed ones: the share below k says how many).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sightline_gateway.clients.services import RiskClasses
from sightline_gateway.db import risk as db
from sightline_gateway.db.engine import UNREACHABLE
from sightline_gateway.db.models import StudyRiskClass

log = logging.getLogger(__name__)

SHARE_BELOW_K = Gauge(
    "sightline_reidentification_share_below_k",
    "Share of a tenant's de-identified studies whose quasi-identifier class (age, sex, device, body "
    "part, shifted year) is smaller than k, the re-identification risk threshold",
    ["tenant"],
)
K_THRESHOLD = Gauge("sightline_reidentification_k", "The k that re-identification risk is measured against")


@dataclass(frozen=True)
class Placement:
    """How a new study is stored and the k it has when it is: figures only, for its deid summary."""

    classes: RiskClasses
    generalise: bool
    k: int
    threshold: int

    def summary(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "k_threshold": self.threshold,
            "generalised": self.generalise,
            "below_k": self.k < self.threshold,
        }


@dataclass(frozen=True)
class RiskReport:
    """A tenant's k-anonymity: the distribution of k over its studies and the share below the threshold."""

    tenant: str
    threshold: int
    studies: int
    generalised: int
    below_k: int
    distribution: list[tuple[int, int]]

    @property
    def share_below_k(self) -> float:
        return self.below_k / self.studies if self.studies else 0.0


class ReidentificationRisk:
    """Places new studies (exact or generalised), and measures and publishes each tenant's k."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], k: int) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.sessions, self.k = sessions, k
        K_THRESHOLD.set(k)

    async def place(self, tenant: str, classes: RiskClasses) -> Placement:
        """Whether a new study with ``classes`` is stored generalised, and its k once stored."""
        async with self.sessions() as session:
            counts = await db.class_counts(session, tenant, classes.exact, classes.generalised)
        generalise = classes.can_generalise and counts.exact_population + 1 < self.k
        k = counts.stored_exact + counts.stored_generalised + 1
        return Placement(classes, generalise, k, self.k)

    @staticmethod
    def row(study_id: str, tenant: str, placement: Placement) -> StudyRiskClass:
        """The study's risk row, added in the transaction that stores the study."""
        return StudyRiskClass(
            study_id=study_id,
            tenant_id=tenant,
            exact_class=placement.classes.exact,
            general_class=placement.classes.generalised,
            generalised=placement.generalise,
        )

    async def report(self, tenant: str) -> RiskReport:
        """The tenant's k-anonymity now (and its gauge set to it)."""
        async with self.sessions() as session:
            rows = await db.k_distribution(session, tenant)
        by_k: dict[int, int] = {}
        for k, _, n in rows:
            by_k[k] = by_k.get(k, 0) + n
        report = RiskReport(
            tenant=tenant,
            threshold=self.k,
            studies=sum(by_k.values()),
            generalised=sum(n for _, g, n in rows if g),
            below_k=sum(n for k, n in by_k.items() if k < self.k),
            distribution=sorted(by_k.items()),
        )
        SHARE_BELOW_K.labels(tenant).set(report.share_below_k)
        return report

    async def refresh(self) -> int:
        """Set every tenant's gauge; returns the number of tenants."""
        async with self.sessions() as session:
            names = await db.tenants(session)
        for tenant in names:
            await self.report(tenant)
        return len(names)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Refresh the gauges every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.refresh()
            except UNREACHABLE as exc:
                log.warning("re-identification risk refresh skipped: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
