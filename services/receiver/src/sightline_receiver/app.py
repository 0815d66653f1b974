"""Application factory of the DICOM receiver: the SCP, the forwarder, and HTTP health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sightline_common.web import service_app

from sightline_receiver import metrics
from sightline_receiver.api.scp import StoreSCP
from sightline_receiver.clients.gateway import GatewayIntake
from sightline_receiver.core.sealing import Sealer, load_key
from sightline_receiver.core.spool import Spool, SpoolError
from sightline_receiver.core.studies import Limits, StudyAssembler
from sightline_receiver.delivery import Forwarder
from sightline_receiver.settings import ReceiverSettings

SERVICE = "receiver"

log = logging.getLogger(__name__)


def recover(spool: Spool, assembler: StudyAssembler, tenants: set[str]) -> None:
    """Take the spool and hold what it keeps for delivery: studies acknowledged before a restart.

    Studies of a tenant no longer configured stay in the spool, undelivered, until it is again.
    """
    found = spool.open()
    routed = [s for s in found.studies if s.tenant in tenants]
    for study in routed:
        assembler.restore(study.tenant, study.study_uid, study.sizes)
    metrics.SPOOL_RECOVERED.inc(len(routed))
    metrics.SPOOL_QUARANTINED.labels("unreadable").inc(found.quarantined)
    log.info(
        "spool: %d studies recovered, %d files quarantined, %d interrupted writes dropped",
        len(routed),
        found.quarantined,
        found.partial,
    )
    if unrouted := sorted({s.tenant for s in found.studies} - tenants):
        kept = sum(s.tenant not in tenants for s in found.studies)
        log.error("spool: %d studies of unconfigured tenants %s kept, not delivered", kept, unrouted)


def create_app(settings: ReceiverSettings, intake: GatewayIntake | None = None) -> FastAPI:
    """Build the app; the SCP listens and the forwarder runs for the app's lifespan.

    Raises :class:`~sightline_receiver.core.sealing.InvalidKey` when the spool key file is unusable.
    """
    # pynetdicom's INFO/DEBUG lines name UIDs and AE titles; ours log hashed ids instead.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    key = load_key(settings.spool_key_file) if settings.spool_key_file is not None else None
    spool = Spool(settings.spool_dir, Sealer(key))
    assembler = StudyAssembler(
        Limits(
            idle_timeout_s=settings.study_idle_timeout_s,
            max_instances_per_study=settings.max_instances_per_study,
            max_study_bytes=settings.max_study_bytes,
            max_pending_bytes=settings.max_pending_bytes,
        )
    )
    scp = StoreSCP(settings, assembler, spool)
    credentials = {s.tenant: s.credential_file for s in settings.tenants}
    forwarder = Forwarder(
        assembler,
        intake
        or GatewayIntake(
            settings.gateway_url,
            timeout_s=settings.gateway_timeout_s,
            retry_budget_s=settings.delivery_retry_budget_s,
        ),
        credentials,
        spool,
        max_age_s=settings.spool_max_age_s,
        backoff_s=settings.redelivery_backoff_s,
        backoff_max_s=settings.redelivery_backoff_max_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            recover(spool, assembler, set(credentials))  # before the SCP takes anything new
        except SpoolError as exc:
            log.error("spool unusable, not starting: %s", exc.reason)
            raise
        forwarder.update_gauges()
        scp.start()
        forwarder.start()
        log.info(
            "DICOM SCP %s listening on %s:%d (%d tenants, TLS %s, spool %s)",
            settings.ae_title,
            settings.host,
            settings.dicom_port,
            len(settings.tenants),
            "on" if settings.tls_cert_file else "off",
            "encrypted" if spool.sealer.encrypted else "UNENCRYPTED",
        )
        try:
            yield
        finally:
            scp.stop()
            forwarder.stop(settings.shutdown_grace_s)
            spool.close()

    async def scp_listening() -> bool:
        return scp.listening

    async def spool_writable() -> bool:
        return spool.writable

    app = service_app(
        SERVICE,
        title="Sightline DICOM receiver",
        ready_checks={"scp": scp_listening, "spool": spool_writable},
        dependencies=lambda: {"gateway": forwarder.gateway_up},
        lifespan=lifespan,
    )
    app.state.scp = scp
    app.state.assembler = assembler
    app.state.forwarder = forwarder
    app.state.spool = spool
    return app
