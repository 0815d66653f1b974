"""Application factory of the DICOM receiver: the SCP, the forwarder, and HTTP health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sightline_common.web import service_app

from sightline_receiver.api.scp import StoreSCP
from sightline_receiver.clients.gateway import GatewayIntake
from sightline_receiver.core.studies import Limits, StudyAssembler
from sightline_receiver.delivery import Forwarder
from sightline_receiver.settings import ReceiverSettings

SERVICE = "receiver"

log = logging.getLogger(__name__)


def create_app(settings: ReceiverSettings, intake: GatewayIntake | None = None) -> FastAPI:
    """Build the app; the SCP listens and the forwarder runs for the app's lifespan."""
    # pynetdicom's INFO/DEBUG lines name UIDs and AE titles; ours log hashed ids instead.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    assembler = StudyAssembler(
        Limits(
            idle_timeout_s=settings.study_idle_timeout_s,
            max_instances_per_study=settings.max_instances_per_study,
            max_study_bytes=settings.max_study_bytes,
            max_pending_bytes=settings.max_pending_bytes,
        )
    )
    scp = StoreSCP(settings, assembler)
    forwarder = Forwarder(
        assembler,
        intake
        or GatewayIntake(
            settings.gateway_url,
            timeout_s=settings.gateway_timeout_s,
            retry_budget_s=settings.delivery_retry_budget_s,
        ),
        {s.tenant: s.credential_file for s in settings.tenants},
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scp.start()
        forwarder.start()
        log.info(
            "DICOM SCP %s listening on %s:%d (%d tenants, TLS %s)",
            settings.ae_title,
            settings.host,
            settings.dicom_port,
            len(settings.tenants),
            "on" if settings.tls_cert_file else "off",
        )
        try:
            yield
        finally:
            scp.stop()
            forwarder.stop()

    async def scp_listening() -> bool:
        return scp.listening

    app = service_app(
        SERVICE,
        title="Sightline DICOM receiver",
        ready_checks={"scp": scp_listening},
        dependencies=lambda: {"gateway": forwarder.gateway_up},
        lifespan=lifespan,
    )
    app.state.scp = scp
    app.state.assembler = assembler
    app.state.forwarder = forwarder
    return app
