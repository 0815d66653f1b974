"""The result forwarder: results re-identified and filed in the tenant's PACS, retried until delivered.

The only module that opens a re-identification record: for a delivery, and for the accession
number alone when the tenant's own system reads its FHIR result (``accession``). For each due
delivery it opens the
study's record with the tenant's key, builds the AI objects from the de-identified image (the SR
and, when there is one, the heatmap Segmentation), files them under the patient's own study
(``core.reidentify``) and sends them by STOW-RS or C-STORE. The identified objects exist only in
memory for the send; nothing of them is logged, traced, stored or put in an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter
from sightline_common.errors import NotFound
from sightline_common.storage import ObjectStore

from sightline_gateway.clients.pacs import PacsSender, SendFailed
from sightline_gateway.clients.retry import RetryPolicy
from sightline_gateway.core import dicomweb
from sightline_gateway.core.envelope import Sealed, TenantKeys, Unopenable
from sightline_gateway.core.heatmap_dicom import heatmap_segmentation
from sightline_gateway.core.reidentify import OriginalStudy, reidentify, uid_map
from sightline_gateway.core.reports import top_index
from sightline_gateway.core.sr import structured_report
from sightline_gateway.db.deliveries import DELIVERED, FAILED, Deliveries, new_delivery
from sightline_gateway.db.models import Delivery, ReidentificationRecord, Result, Study, utcnow
from sightline_gateway.settings import PacsDestination

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

DELIVERIES = Counter(
    "sightline_result_deliveries", "Result deliveries to tenants' PACS by outcome", ["kind", "outcome"]
)
#: While a result's explanation is pending (explain down), its delivery waits this long between
#: looks, so that the heatmap goes with the SR; after the delivery budget it goes without.
EXPLANATION_WAIT_S = 30.0


class Undeliverable(Exception):
    """A delivery that can never succeed (no record, record does not open, images purged)."""


class Forwarder:
    """Keeps tenants' re-identification records at intake and forwards their results."""

    def __init__(
        self,
        *,
        deliveries: Deliveries,
        store: ObjectStore,
        keys: TenantKeys,
        destinations: Mapping[str, PacsDestination],
        senders: Mapping[str, PacsSender],
        policy: RetryPolicy,
        poll_s: float,
    ) -> None:
        self.deliveries, self.store, self.keys = deliveries, store, keys
        self.destinations, self.senders = dict(destinations), dict(senders)
        self.policy, self.poll_s = policy, poll_s

    @staticmethod
    def load_builders() -> None:
        """Import highdicom (about a second, more on a busy host) before the first delivery, so
        that the first result a process files does not spend that time out of its retry budget."""
        import highdicom  # noqa: F401

    # ---- intake: the record ---------------------------------------------------------------

    def keeps(self, tenant: str) -> bool:
        """Whether the tenant's studies keep a record: it has a PACS to file results in, and a key."""
        return tenant in self.destinations and self.keys.holds(tenant)

    def record(self, tenant: str, study_id: str, original: OriginalStudy) -> ReidentificationRecord:
        """``original`` sealed under the tenant's key, as the row the intake commits with the study."""
        sealed = self.keys.seal(tenant, study_id, original.to_bytes())
        return ReidentificationRecord(
            study_id=study_id,
            tenant_id=tenant,
            key_id=sealed.key_id,
            wrapped_key=sealed.wrapped_key,
            ciphertext=sealed.ciphertext,
            created_at=utcnow(),
        )

    async def accession(self, study_id: str) -> str | None:
        """The study's original accession number, for the tenant's own system (FHIR), else None.

        None when no record is kept (no PACS for the tenant, purged) or it does not open; only
        the accession leaves this method, never the patient's identifiers or the original UIDs.
        """
        _, _, record = await self.deliveries.load(study_id)
        if record is None:
            return None
        try:
            accession = self._open(record).accession
        except Unopenable as exc:
            log.warning("re-identification record of a study did not open: %s", type(exc).__name__)
            return None
        return accession or None

    def _open(self, record: ReidentificationRecord) -> OriginalStudy:
        """The record's original identifiers (raises :class:`Unopenable`); kept in memory only."""
        plain = self.keys.open(
            record.tenant_id, record.study_id, Sealed(record.key_id, record.wrapped_key, record.ciphertext)
        )
        return OriginalStudy.from_bytes(plain)

    # ---- result: the delivery -------------------------------------------------------------

    def delivery_for(self, study: Study) -> Delivery | None:
        """A pending delivery of the study's result when its tenant has a PACS."""
        destination = self.destinations.get(study.tenant_id)
        return new_delivery(study.id, study.tenant_id, destination.name) if destination else None

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due results until ``stop`` is set."""
        while not stop.is_set():
            try:
                worked = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop forwarding
                log.error("delivery pass failed: %s", type(exc).__name__)
                worked = False
            if not worked:
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                except TimeoutError:
                    pass

    async def run_once(self) -> bool:
        """Claim and run one due delivery; ``False`` when none was due."""
        delivery = await self.deliveries.claim()
        if delivery is None:
            return False
        with tracer.start_as_current_span("gateway.deliver") as span:
            span.set_attribute("sightline.study_id", delivery.study_id)
            span.set_attribute("sightline.delivery.attempt", delivery.attempts + 1)
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                # Shutdown: hand the lease back (due now, not counted as an attempt) so that the
                # next process takes the delivery at once instead of after the lease expires.
                await asyncio.shield(self.deliveries.later(delivery, 0.0, None, attempted=False))
                raise
        return True

    async def _deliver(self, delivery: Delivery) -> None:
        destination = self.destinations.get(delivery.tenant_id)
        elapsed = (utcnow() - delivery.created_at).total_seconds()
        if destination is None or destination.name != delivery.destination:
            kind = destination.kind if destination is not None else "none"
            await self._end(delivery, kind, FAILED, "destination no longer configured")
            return
        try:
            objects = await self._objects(delivery, waiting=elapsed < self.policy.budget_s)
        except Undeliverable as exc:
            await self._end(delivery, destination.kind, FAILED, str(exc))
            return
        if objects is None:  # the explanation is still pending: look again later, not an attempt
            await self.deliveries.later(delivery, EXPLANATION_WAIT_S, None, attempted=False)
            return
        try:
            await self.senders[destination.kind].send(destination, objects)
        except SendFailed as exc:
            # The budget is judged after the build and the send, which can take a while themselves.
            elapsed = (utcnow() - delivery.created_at).total_seconds()
            delay = None if exc.final else self.policy.next_delay(delivery.attempts + 1, elapsed)
            if delay is None:
                why = exc.reason if exc.final else f"retry budget exhausted: {exc.reason}"
                await self._end(delivery, destination.kind, FAILED, why)
            else:
                DELIVERIES.labels(destination.kind, "retry").inc()
                await self.deliveries.later(delivery, delay, exc.reason, attempted=True)
                log.warning("delivery retry in %.1fs (attempt %d)", delay, delivery.attempts + 1)
            return
        await self._end(delivery, destination.kind, DELIVERED)

    async def _end(self, delivery: Delivery, kind: str, status: str, reason: str | None = None) -> None:
        await self.deliveries.end(delivery, status, reason)
        DELIVERIES.labels(kind, status).inc()
        log.info("delivery %s after %d attempts", status, delivery.attempts + 1)

    async def _objects(self, delivery: Delivery, *, waiting: bool) -> list[bytes] | None:
        """The re-identified SR (a finding per model) and the first model's heatmap Segmentation;
        ``None`` to wait while any model's explanation is pending."""
        study, results, record = await self.deliveries.load(delivery.study_id)
        if study is None or not results:
            raise Undeliverable("no result")
        if record is None:
            raise Undeliverable("no re-identification record (purged, or kept before a PACS was set)")
        if waiting and any((r.explanation or {}).get("status") == "pending" for r in results):
            return None
        if study.purged_at is not None or not study.instance_keys:
            raise Undeliverable("the de-identified images were purged")
        try:
            original = self._open(record)
        except Unopenable as exc:
            raise Undeliverable(f"re-identification record: {exc}") from None
        return await asyncio.to_thread(self._build, study, results, original)

    def _build(self, study: Study, results: list[Result], original: OriginalStudy) -> list[bytes]:
        try:
            images = [self.store.get(key) for key in study.instance_keys]
        except NotFound:
            raise Undeliverable("the de-identified images are missing") from None
        mapping = uid_map(original, images)
        obj = dicomweb.result_object(study.id, study.deid_study_uid or "")
        sr = structured_report(
            results=results,
            sources=[images[top_index(r)] for r in results],
            series_uid=obj.series_uid,
            sop_instance_uid=obj.sop_instance_uid,
        )
        objects = [reidentify(sr, original, mapping)]
        # One heatmap object per study (its UIDs are the study's): the first model's.
        heatmap = self._heatmap(study, results[0], images[top_index(results[0])])
        if heatmap is not None:
            objects.append(reidentify(heatmap, original, mapping))
        return objects

    def _heatmap(self, study: Study, result: Result, source: bytes) -> bytes | None:
        explanation: dict[str, Any] = result.explanation or {}
        if explanation.get("status") != "available" or not explanation.get("heatmap_key"):
            return None
        series_uid, instance_uid = dicomweb.heatmap_uids(study.id)
        try:
            return heatmap_segmentation(
                result=result,
                source=source,
                heatmap_npy=self.store.get(explanation["heatmap_key"]),
                series_uid=series_uid,
                sop_instance_uid=instance_uid,
            )
        except (NotFound, KeyError, OSError, ValueError) as exc:
            # The SR stands on its own; a heatmap that cannot be made is not a reason to withhold it.
            log.warning("delivery without the heatmap: %s", type(exc).__name__)
            return None
